"""Captions for scikit-learn's digits that say more than the class: attributes measured from the pixels.

A text-to-image model trained on "a seven" only has to learn ten labels. Here every caption also names how the
digit is drawn, measured from its own pixels, so a model that follows the caption must follow more than the class.

**How each attribute is measured** (:func:`measure`), on the image area-averaged to the digits' native 8 x 8 grid
with ink in [0, 1] (white strokes on black, as the data set stores them):

* ``thickness`` — the total ink, the sum of the 64 ink values. Digits of one class have about the same stroke
  length, so more ink means thicker strokes (within a class it correlates 0.05 with size and slant).
* ``slant`` — the shear of the ink's second moments, ``-mu11 / mu02`` (x right, y down): how far the ink moves right
  per row going up. Positive leans right (like ``/``), negative leans left; this is the quantity MNIST deskewing
  removes.
* ``size`` — the ink's radius of gyration, ``sqrt(mu20 + mu02)`` in pixels of the 8 x 8 grid: how far the ink
  spreads around its centre of mass.

**How they are binned** (:func:`bins_of`): per class, at the terciles of that class's values over all 1,797 digits
(:func:`thresholds`). A "one" is thin or large compared with other ones, not with eights, so the attribute is
independent of the class. The lower third is ``low`` (thin, leaning left, small), the upper third ``high`` (thick,
slanted right, large), the middle third ``mid``. A caption names each low/high attribute with probability 0.85 and
a mid slant ("upright") with probability 0.5; mid thickness and size are never named (there is no word a person
would use), so a caption that says nothing about thickness asks for nothing.

Captions are English or Chinese (a seeded coin per image), from several templates and synonyms, and
:func:`parse_prompt` reads a class and the attributes back from either language: evaluation uses it to know what a
prompt asked for, whether it came from the data set or from a person.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

ATTRIBUTES = ("thickness", "slant", "size")
BINS = ("low", "mid", "high")
NATIVE = 8  # the digits' own grid: every measurement is taken there

EN_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ZH_NUMBERS = ("零", "一", "二", "三", "四", "五", "六", "七", "八", "九")

# attribute -> bin -> words (the first is the canonical one); English then Chinese
EN_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "thickness": {"low": ("thin", "light", "fine-stroked"), "high": ("thick", "bold", "heavy")},
    "slant": {"low": ("left-leaning", "backslanted"), "mid": ("upright", "straight"), "high": ("slanted", "italic")},
    "size": {"low": ("small", "compact", "tiny"), "high": ("large", "big", "wide")},
}
ZH_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "thickness": {"low": ("细", "纤细"), "high": ("粗", "粗体")},
    "slant": {"low": ("向左倾斜", "左倾"), "mid": ("端正", "直立"), "high": ("倾斜", "向右倾斜", "右倾")},
    "size": {"low": ("小", "小号"), "high": ("大", "大号")},
}
MENTION = {"low": 0.85, "mid": 0.5, "high": 0.85}  # chance a caption names an attribute in this bin (mid: slant only)


@dataclass(frozen=True)
class Request:
    """What a prompt asks for: a class (or None) and a bin per named attribute."""

    label: int | None
    attributes: dict[str, str]


def _native(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) floats in [-1, 1] (or uint8) -> ink in [0, 1] on the 8 x 8 grid, (N, 8, 8)."""
    x = images.float()
    x = x / 255.0 if images.dtype == torch.uint8 else (x + 1) / 2
    x = x.mean(1, keepdim=True).clamp(0, 1)
    if x.shape[-1] != NATIVE:
        x = F.adaptive_avg_pool2d(x, NATIVE)
    return x[:, 0]


def measure(images: torch.Tensor) -> dict[str, np.ndarray]:
    """``thickness``, ``slant`` and ``size`` of each image (see the module docstring), as float arrays (N,)."""
    ink = _native(images).double()
    yy, xx = torch.meshgrid(torch.arange(NATIVE, dtype=ink.dtype), torch.arange(NATIVE, dtype=ink.dtype), indexing="ij")
    mass = ink.sum((1, 2)).clamp_min(1e-6)
    cx = (ink * xx).sum((1, 2)) / mass
    cy = (ink * yy).sum((1, 2)) / mass
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    mu11 = (ink * dx * dy).sum((1, 2)) / mass
    mu20 = (ink * dx * dx).sum((1, 2)) / mass
    mu02 = (ink * dy * dy).sum((1, 2)) / mass
    return {
        "thickness": ink.sum((1, 2)).numpy(),
        "slant": (-mu11 / mu02.clamp_min(1e-6)).numpy(),
        "size": (mu20 + mu02).sqrt().numpy(),
    }


@functools.lru_cache(maxsize=1)
def thresholds() -> dict[str, np.ndarray]:
    """Per attribute, a (10, 2) array: each class's 1/3 and 2/3 quantiles over all 1,797 scikit-learn digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    values = measure(torch.from_numpy(d.images / 8.0 - 1.0)[:, None])
    return {a: np.stack([np.quantile(values[a][d.target == k], [1 / 3, 2 / 3]) for k in range(10)]) for a in ATTRIBUTES}


def bins_of(values: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    """Each value's bin (0 low, 1 mid, 2 high) among its class's terciles."""
    t = thresholds()
    labels = np.asarray(labels)
    return {a: (values[a] > t[a][labels, 0]).astype(np.int64) + (values[a] > t[a][labels, 1]) for a in ATTRIBUTES}


def side_of_median(values: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    """Each value's side of its class's median, approximated by the terciles' midpoint: -1 below, +1 above."""
    t = thresholds()
    labels = np.asarray(labels)
    return {a: np.where(values[a] > t[a][labels].mean(1), 1, -1) for a in ATTRIBUTES}


def caption(label: int, bins: dict[str, int], rng: random.Random) -> str:
    """One caption of a digit of class ``label`` whose attributes fall in ``bins`` (0/1/2 per attribute)."""
    named = {
        a: BINS[b] for a, b in bins.items() if BINS[b] in EN_WORDS[a] and rng.random() < MENTION[BINS[b]]
    }  # mid thickness / size have no words
    order = [a for a in ("size", "thickness", "slant") if a in named]
    if rng.random() < 0.5:
        words = [rng.choice(EN_WORDS[a][named[a]]) for a in order]
        number = rng.choice((EN_NUMBERS[label], EN_NUMBERS[label], f"digit {label}", f"number {EN_NUMBERS[label]}"))
        template = rng.choice(
            ("a {adj} {num}", "{adj} {num}", "a handwritten {adj} {num}", "an image of a {adj} {num}")
        )
        text = template.format(adj=" ".join(words), num=number)
        text = re.sub(r"\ba ([aeiou])", r"an \1", re.sub(r"\s+", " ", text).strip())
        return text.replace("an one", "a one")
    words = [rng.choice(ZH_WORDS[a][named[a]]) for a in order]
    number = rng.choice((ZH_NUMBERS[label], f"数字{ZH_NUMBERS[label]}", f"数字{label}"))
    template = rng.choice(("一个{adj}{num}", "{adj}{num}", "手写的{adj}{num}"))
    adj = "、".join(words) + ("的" if words else "")
    return template.format(adj=adj, num=number)


def digit_captions(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> list[str]:
    """A caption per digit (uint8 (N, H, W, 1) images), from its measured attribute bins and a seeded choice."""
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    bins = bins_of(measure(x), labels)
    rng = random.Random(seed)
    return [caption(int(y), {a: int(bins[a][i]) for a in ATTRIBUTES}, rng) for i, y in enumerate(labels)]


def _lookup() -> list[tuple[str, str, str]]:
    """(word, attribute, bin), longest words first, so "向右倾斜" is read before "倾斜"."""
    out = [(w, a, b) for table in (EN_WORDS, ZH_WORDS) for a, bs in table.items() for b, ws in bs.items() for w in ws]
    return sorted(out, key=lambda t: -len(t[0]))


def parse_prompt(prompt: str) -> Request:
    """The class and attribute bins a prompt names, in English or Chinese ("a thick slanted seven", "细的数字3").

    Unknown words are ignored; a class is a digit, an English number word or a Chinese numeral (the first found).
    """
    text = prompt.lower()
    attributes: dict[str, str] = {}
    for word, attr, b in _lookup():
        pattern = re.escape(word) if not word.isascii() else rf"(?<![\w-]){re.escape(word)}(?![\w-])"
        if attr not in attributes and re.search(pattern, text):
            attributes[attr] = b
            text = re.sub(pattern, " ", text)
    label = None
    m = re.search(
        r"\d|\b(" + "|".join(EN_NUMBERS) + r")\b|[" + "".join(ZH_NUMBERS) + "]",
        text.replace("一个", " ").replace("一张", " "),
    )
    if m:
        tok = m.group(0)
        label = int(tok) if tok.isdigit() else EN_NUMBERS.index(tok) if tok in EN_NUMBERS else ZH_NUMBERS.index(tok)
    return Request(label, attributes)
