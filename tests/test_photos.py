"""The ``photos`` built-in: tiles of the photographs bundled with scikit-image and scikit-learn, offline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import cli, tiny

from genloop.data import DataConfig, datasets, load_dataset
from genloop.data.builtin import Photos, bundled_photos


@pytest.fixture(scope="module")
def tiles():
    return Photos().tiles()


def test_bundled_photos_ship_offline() -> None:
    photos = bundled_photos()
    assert sorted(photos) == sorted(
        [
            "astronaut",
            "chelsea",
            "coffee",
            "hubble_deep_field",
            "immunohistochemistry",
            "retina",
            "rocket",
            "stereo_motorcycle",
            "china",
            "flower",
        ]
    )
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in photos.values())


def test_tiles_are_non_overlapping_capped_and_labelled(tiles) -> None:
    images, labels, names, boxes = tiles
    t = Photos().tile
    assert images.shape == (len(boxes), t, t, 3) and images.dtype == np.uint8 and 600 < len(boxes) < 1000
    assert labels.dtype == np.int64 and sorted(set(labels.tolist())) == list(range(len(names)))
    assert max(np.bincount(labels)) <= Photos().per_photo
    assert all(names[label] == box[0] for label, box in zip(labels, boxes))
    by_photo: dict[str, list[tuple[int, int]]] = {}
    for name, y, x in boxes:
        by_photo.setdefault(name, []).append((y, x))
    for corners in by_photo.values():  # grid-aligned corners, each once: no two tiles share a pixel
        assert all(y % t == 0 and x % t == 0 for y, x in corners) and len(set(corners)) == len(corners)
    grey = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    assert grey.reshape(len(boxes), -1).std(1).min() >= Photos().min_std  # no flat black tiles


def test_tiles_are_deterministic(tiles) -> None:
    images, labels, _, boxes = Photos().tiles()
    assert np.array_equal(images, tiles[0]) and np.array_equal(labels, tiles[1]) and boxes == tiles[3]


@pytest.mark.parametrize("size", [32, 64])
def test_photos_dataset_sizes_and_disjoint_split(tiles, size: int) -> None:
    assert "photos" in datasets.names()
    ds = load_dataset(DataConfig(name="photos", image_size=size, cache=False))
    assert ds.images.shape == (len(tiles[3]), 3, size, size) and ds.num_classes == 10
    if size == 64:  # the native size: the tiles themselves
        assert torch.equal(ds.images, torch.from_numpy(tiles[0]).permute(0, 3, 1, 2))
    boxes = tiles[3]
    parts = {s: {boxes[i] for i in ds.splits[s].tolist()} for s in ("train", "val", "test")}
    for a, b in itertools.combinations(parts, 2):
        assert not parts[a] & parts[b]  # distinct tiles, and distinct tiles never overlap (above)
    assert sum(len(p) for p in parts.values()) == len(boxes)
    again = load_dataset(DataConfig(name="photos", image_size=size, cache=False))
    assert all(torch.equal(ds.splits[s], again.splits[s]) for s in ds.splits)


def test_cli_data_info_and_train_ddpm_on_photos(capsys) -> None:
    code, out, err = cli(capsys, "data", "info", "photos")
    assert code == 0, err
    assert "photos" in out and "[3, 32, 32]" in out and "astronaut" in out
    code, out, _ = cli(capsys, "data", "list")
    assert "photos" in out.split()
    sets = [a for item in tiny("ddpm") for a in ("--set", item)]
    code, out, err = cli(capsys, "train", "ddpm", "--data", "photos", *sets, "--steps", "2", "--quiet")
    assert code == 0, err
    run = out.strip().splitlines()[-1]
    code, out, err = cli(capsys, "generate", run, "--n", "2")
    assert code == 0, err
