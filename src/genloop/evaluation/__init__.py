"""Offline, honest evaluation: metrics on a reference net trained on the dataset itself, with real-data floors."""

from .features import (
    REFNET_VERSION,
    FeatureExtractor,
    ReferenceNet,
    RefNetConfig,
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
    frechet_distance,
    mmd2_unbiased,
)
from .inception import InceptionFeatureExtractor, load_inception
from .manifold import DensityCoverage, PrecisionRecall
from .memorization import MemorizationReport, closest_pairs_grid, memorization, nearest_neighbours
from .suite import ALL_METRICS, evaluate_images

__all__ = [
    "ALL_METRICS",
    "DensityCoverage",
    "InceptionFeatureExtractor",
    "MemorizationReport",
    "PrecisionRecall",
    "closest_pairs_grid",
    "load_inception",
    "memorization",
    "nearest_neighbours",
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
