"""Datasets: built-in ones by name, or the user's own images, prepared once into uint8 tensors and cached.

from genloop.data import DataConfig, load_dataset
ds = load_dataset(DataConfig(name="digits", image_size=16))
x, y = ds.get("train")  # uint8 (N, 1, 16, 16), int64 (N,)
"""

from __future__ import annotations

from .builtin import datasets, download
from .image import DataConfig, ImageBatches, ImageDataset, to_float, to_uint8
from .prepare import IMAGE_PREP_VERSION, load_dataset, split_indices


def dataset_names() -> list[str]:
    """The built-in dataset names (a path to a folder, IDX or .npz file works too)."""
    return datasets.names()


__all__ = [
    "IMAGE_PREP_VERSION",
    "DataConfig",
    "ImageBatches",
    "ImageDataset",
    "dataset_names",
    "datasets",
    "download",
    "load_dataset",
    "split_indices",
    "to_float",
    "to_uint8",
]
