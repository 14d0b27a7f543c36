"""The image modality: image datasets (``genloop.data``), GAN/VAE/diffusion pipelines, PNGs with their recipe,
FID-style evaluation on the reference net, and the reference net's features for reward models."""

from .modality import ImageModality

__all__ = ["ImageModality"]
