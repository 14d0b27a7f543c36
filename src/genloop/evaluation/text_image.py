"""How ``genloop eval`` scores a text-to-image run: samples drawn from held-out captions, then adherence.

* **Prompts**: the held-out (test, then val) captions in a seeded order, repeated to ``n``: prompts the model never
  trained on, phrased as the data phrases them. FID and the other image metrics are of these samples.
* **Class followed**: where the caption grammar of :mod:`genloop.data.digit_captions` reads a class from the
  data's own captions (digits-captions, or a folder captioned the same way), each prompt's class is the label the
  reference classifier is checked against — the suite's ``class_accuracy``, beside its real-data floor.
* **Attributes followed**: for the same data, each attribute a prompt names (thick, slanted, small, ...) is
  measured on the sample and binned among its requested class's terciles. ``attribute_accuracy`` is the share of
  named attributes whose measured bin is the requested one (chance: about 1/3); ``attribute_direction_accuracy``
  the looser share on the requested side of the class median (upright: in the middle third; chance 1/2).
* **CLIP-score analogue**: :mod:`genloop.evaluation.clip_score`, for any captions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data import ImageDataset
from ..data.digit_captions import ATTRIBUTES, BINS, measure, parse_prompt, side_of_median, thresholds

GRAMMAR_MIN_SHARE = 0.95  # the digit grammar applies when it reads the right class from this share of captions


def eval_prompts(dataset: ImageDataset, n: int, seed: int) -> list[str]:
    """``n`` held-out captions (test, then val), in a seeded order, cycled as often as ``n`` needs."""
    pool = [c for split in ("test", "val") if split in dataset.splits for c in dataset.get_captions(split)]
    if not pool:
        pool = dataset.get_captions("train")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
    return [pool[order[i % len(pool)]] for i in range(n)]


def grammar_applies(dataset: ImageDataset) -> bool:
    """Whether the digit caption grammar reads this data's captions: ten classes named 0-9, and the class parsed
    from a held-out caption is its image's label for at least :data:`GRAMMAR_MIN_SHARE` of them."""
    if dataset.class_names != [str(i) for i in range(10)] or dataset.labels is None or dataset.captions is None:
        return False
    split = "test" if dataset.splits["test"].numel() else "train"
    labels = dataset.get(split)[1].tolist()
    parsed = [parse_prompt(c).label for c in dataset.get_captions(split)]
    return bool(labels) and float(np.mean([p == y for p, y in zip(parsed, labels)])) >= GRAMMAR_MIN_SHARE


def requested_labels(prompts: list[str]) -> torch.Tensor | None:
    """Each prompt's class, or None unless every prompt names one."""
    labels = [parse_prompt(p).label for p in prompts]
    return None if any(lab is None for lab in labels) else torch.tensor(labels, dtype=torch.long)


def attribute_adherence(images: torch.Tensor, prompts: list[str]) -> dict[str, Any]:
    """How often the measured attributes of ``images`` are the ones their prompts named (module docstring)."""
    requests = [parse_prompt(p) for p in prompts]
    keep = [i for i, r in enumerate(requests) if r.label is not None]
    if not keep:
        return {}
    labels = np.array([requests[i].label for i in keep])
    values = measure(images[keep])
    t = thresholds()
    side = side_of_median(values, labels)
    exact: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    direction: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    for j, i in enumerate(keep):
        for attr, want in requests[i].attributes.items():
            v = values[attr][j]
            lo, hi = t[attr][labels[j]]
            got = BINS[int(v > lo) + int(v > hi)]
            exact[attr].append(got == want)
            direction[attr].append(got == "mid" if want == "mid" else side[attr][j] == (1 if want == "high" else -1))
    named = sum(len(v) for v in exact.values())
    if not named:
        return {"attribute_prompts": 0}
    return {
        "attribute_accuracy": round(sum(sum(v) for v in exact.values()) / named, 4),
        "attribute_direction_accuracy": round(sum(sum(v) for v in direction.values()) / named, 4),
        "attribute_accuracy_by": {a: round(float(np.mean(v)), 4) for a, v in exact.items() if v},
        "attribute_direction_accuracy_by": {a: round(float(np.mean(v)), 4) for a, v in direction.items() if v},
        "attribute_requests": named,
        "attribute_chance": round(1 / 3, 4),
    }


def text_image_metrics(
    images: torch.Tensor, prompts: list[str], dataset: ImageDataset, digit_grammar: bool
) -> dict[str, Any]:
    """Adherence of generated ``images`` to their ``prompts``: attributes (where the digit grammar applies) and
    the CLIP-score analogue with its retrieval accuracy."""
    from .clip_score import clip_metrics, get_scorer

    out: dict[str, Any] = {"prompts_from": "held-out captions (test, then val)"}
    if digit_grammar:
        out.update(attribute_adherence(images, prompts))
    out.update(clip_metrics(get_scorer(dataset), images, prompts, dataset))
    return out
