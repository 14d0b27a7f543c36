"""Whether a dataset's split leaves enough held-out images for ``genloop eval``, asked before training.

Why: a folder of 3 images trains happily and only ``eval`` failed, minutes later, on "the sanity suite needs
at least 10 held-out images". The number comes from the evaluators themselves (:data:`.sanity.MIN_HELDOUT`:
the reference net's metric sanity suite, the strictest of them), and the advice is computed from the split
arithmetic of :func:`genloop.data.split_indices`, so it says exactly how many images or which split would do.
"""

from __future__ import annotations

import math
from typing import Any

from .sanity import MIN_HELDOUT


def heldout_count(n: int, fractions: list[float]) -> int:
    """Images in val + test when ``n`` images are split by ``fractions`` (as :func:`~genloop.data.split_indices`)."""
    return n - min(round(n * fractions[0]), n)


def images_needed(fractions: list[float], limit: int = 1_000_000) -> int | None:
    """The fewest images whose split by ``fractions`` holds out :data:`MIN_HELDOUT`; None if no count does."""
    if fractions[0] >= 1.0:
        return None
    n = MIN_HELDOUT
    while heldout_count(n, fractions) < MIN_HELDOUT:
        n += 1
        if n > limit:
            return None
    return n


def heldout_warning(dataset: Any, fractions: list[float]) -> str | None:
    """One line when ``dataset``'s val + test splits are too small for ``genloop eval``, saying what to do;
    None when evaluation will have enough."""
    held = sum(int(dataset.splits[s].numel()) for s in ("val", "test") if s in dataset.splits)
    if held >= MIN_HELDOUT:
        return None
    n = int(dataset.images.shape[0])
    split = "/".join(f"{f:g}" for f in fractions)
    options = []
    need = images_needed(fractions)
    if need is not None:
        options.append(f"add images (at least {need:,} in all with this split)")
    if n >= MIN_HELDOUT + 3:  # memorisation needs 3 training images
        train = math.floor((n - MIN_HELDOUT) / n * 100) / 100  # rounded down: at least MIN_HELDOUT held out
        val = round((1 - train) / 2, 2)
        test = round(1 - train - val, 2)
        options.append(f"hold out more with --set data.split=[{train:g},{val:g},{test:g}]")
    options.append("or train anyway and skip `genloop eval` for this run")
    return (
        f"data {dataset.name!r} has {n:,} images and the split {split} holds out {held} (val + test), but "
        f"`genloop eval` needs at least {MIN_HELDOUT} held-out images: " + ", ".join(options)
    )
