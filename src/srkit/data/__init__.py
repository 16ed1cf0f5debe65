"""Datasets, degradations and augmentations."""
