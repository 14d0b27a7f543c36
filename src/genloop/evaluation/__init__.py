"""Offline, honest evaluation: metrics on a reference net trained on the dataset itself, with real-data floors."""

from .features import (
    REFNET_VERSION,
    FeatureExtractor,
    RefNetConfig,
    ReferenceNet,
    TrainRecipe,
    cache_key,
    get_feature_extractor,
    train_reference_net,
)
from .image_metrics import (
    FrechetDistance,
    GaussianStats,
    InceptionScore,
    KernelInceptionDistance,
    evaluate_images,
    frechet_distance,
    mmd2_unbiased,
)

__all__ = [
    "REFNET_VERSION",
    "FeatureExtractor",
    "RefNetConfig",
    "ReferenceNet",
    "TrainRecipe",
    "cache_key",
    "get_feature_extractor",
    "train_reference_net",
    "FrechetDistance",
    "GaussianStats",
    "InceptionScore",
    "KernelInceptionDistance",
    "evaluate_images",
    "frechet_distance",
    "mmd2_unbiased",
]
