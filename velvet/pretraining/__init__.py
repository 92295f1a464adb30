"""Pretraining: the VELVET-Med objectives over a model, and negative-keeping accumulation.

Plain torch (no Lightning): :mod:`velvet.tasks.pretrain` drives it.
"""
