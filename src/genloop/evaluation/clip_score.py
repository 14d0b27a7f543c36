"""A small contrastive image–text scorer trained on the data set itself: a CLIP-score analogue that needs no
download.

CLIP score (Hessel et al. 2021) is the cosine between an image's and a prompt's embeddings from a model trained to
pair them. A web-scale CLIP is neither offline nor meaningful on 8 px digits, so GenLoop trains a small one per
data set on its training split — a conv net for the images, the text-to-image model's byte-level transformer
(:class:`~genloop.models.text_unet.TextEncoder`) for the captions, a symmetric InfoNCE loss (Radford et al. 2021) —
and caches it like the reference feature net. How far to trust it is measured, not assumed: its text-to-image
retrieval accuracy on the held-out split is reported beside every score, and its score of the held-out real images
with their own captions is the floor a generated set is compared with.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageDataset, to_float
from ..errors import GenLoopError
from ..models.text_unet import TextEncoder, encode_texts
from ..paths import cache_dir
from ..serialization import load_tensors, save_tensors

VERSION = 1  # part of the cache key: bump when the net or its training changes
MAX_BYTES = 128
TRAIN_STEPS = 300  # Adam steps of 128 pairs: the held-out retrieval says whether that was enough


def _tokens(texts: list[str]) -> torch.Tensor:
    """Byte tokens padded only to the longest text given (attention over padding costs time, changes nothing)."""
    tokens = encode_texts(texts, MAX_BYTES)
    return tokens[:, : max(1, int((tokens != 0).sum(1).max()))]


class ImageTextScorer(nn.Module):
    """Two encoders into one normalised ``dim``-d space; ``score(images, texts)`` is their cosine x 100."""

    def __init__(self, channels: int, width: int = 32, dim: int = 64, text_width: int = 32) -> None:
        super().__init__()
        self.image = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.GroupNorm(4, width),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
            nn.GroupNorm(4, 2 * width),
            nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, dim),
        )
        self.text = TextEncoder(MAX_BYTES, text_width, layers=1, heads=4)
        self.text_proj = nn.Linear(text_width, dim)
        self.log_scale = nn.Parameter(torch.tensor(2.66))  # log(1/0.07), CLIP's starting temperature

    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(x), dim=-1)

    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.text(tokens)
        return F.normalize(self.text_proj(h[:, 0]), dim=-1)

    @torch.no_grad()
    def score(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """CLIP score per pair: 100 x cosine(image i, text i), float64 (N,)."""
        self.eval()
        return 100 * (self.embed_images(images.float()) * self.embed_texts(_tokens(texts))).sum(-1).double()

    @torch.no_grad()
    def retrieval(self, images: torch.Tensor, texts: list[str], ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
        """Text -> image retrieval among ``images``: the share of texts whose own image ranks in the top k."""
        self.eval()
        sim = self.embed_texts(_tokens(texts)) @ self.embed_images(images.float()).T
        own = sim.diagonal()[:, None]
        rank = (sim > own).sum(1)  # images scored strictly above the text's own one
        return {k: float((rank < k).double().mean()) for k in ks}


def _key(dataset: ImageDataset, steps: int, seed: int) -> str:
    blob = {"v": VERSION, "data": dataset.source_hash, "train": dataset.splits["train"].tolist(), "steps": steps}
    blob["seed"] = seed
    return hashlib.sha256(json.dumps(blob).encode()).hexdigest()[:32]


def train_scorer(
    dataset: ImageDataset, steps: int = TRAIN_STEPS, batch_size: int = 128, seed: int = 0
) -> ImageTextScorer:
    """Fit the scorer on the training split's image–caption pairs (seeded)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    images = dataset.float_images("train")
    tokens = _tokens(dataset.get_captions("train"))
    net = ImageTextScorer(dataset.channels)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    n = images.shape[0]
    b = min(batch_size, n)
    for _ in range(steps):
        idx = torch.randperm(n, generator=g)[:b]
        img, txt = net.embed_images(images[idx]), net.embed_texts(tokens[idx])
        logits = net.log_scale.clamp(max=4.6).exp() * img @ txt.T
        # pairs with the same caption are not negatives of each other
        same = tokens[idx][:, None, :].eq(tokens[idx][None, :, :]).all(-1)
        logits = logits.masked_fill(same & ~torch.eye(b, dtype=torch.bool), float("-inf"))
        target = torch.arange(b)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def get_scorer(dataset: ImageDataset, steps: int | None = None, seed: int = 0) -> ImageTextScorer:
    """The scorer of ``dataset``: from the cache, or trained once (``steps``, default :data:`TRAIN_STEPS`) and
    cached (atomically)."""
    steps = TRAIN_STEPS if steps is None else steps
    path = cache_dir("clipscore") / f"{_key(dataset, steps, seed)}.safetensors"
    net = ImageTextScorer(dataset.channels)
    if path.is_file():
        try:
            tensors, _ = load_tensors(path)
            net.load_state_dict(tensors)
            return net.eval()
        except (GenLoopError, RuntimeError, KeyError, OSError):  # a stale or broken cache is retrained over
            pass
    net = train_scorer(dataset, steps, seed=seed)
    try:
        save_tensors(path, net.state_dict(), state={"version": VERSION, "steps": steps})
    except OSError:
        pass  # scoring still works; only the next evaluation trains again
    return net


def clip_metrics(scorer: ImageTextScorer, images: torch.Tensor, prompts: list[str], dataset: Any) -> dict[str, Any]:
    """``clip_score`` of generated images with their prompts, its floor (held-out real images with their own
    captions) and the scorer's held-out retrieval accuracy (with chance beside it)."""
    real = to_float(dataset.get("test")[0])
    captions = dataset.get_captions("test")
    retrieval = scorer.retrieval(real, captions)
    return {
        "clip_score": round(float(scorer.score(images, prompts).mean()), 3),
        "clip_score_floor": round(float(scorer.score(real, captions).mean()), 3),
        "clip_retrieval_top1": round(retrieval[1], 4),
        "clip_retrieval_top5": round(retrieval[5], 4),
        "clip_retrieval_chance_top1": round(1 / max(1, len(captions)), 4),
        "clip_retrieval_pool": len(captions),
    }
