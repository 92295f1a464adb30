"""Evaluation metrics: retrieval, and segmentation in millimetres (Dice, NSD, HD95) with its result tables."""
