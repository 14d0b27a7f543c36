"""Modalities beyond the original image and text loops (music first); each lives in its own sub-package."""
