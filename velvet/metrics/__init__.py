"""Evaluation metrics (retrieval now; NLG and segmentation wrappers with their tasks)."""
