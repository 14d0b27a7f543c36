"""A small reference network, trained on the dataset itself, whose features the image metrics compare.

FID, KID and the Inception Score are usually computed on an Inception-v3 trained on ImageNet. GenLoop
must work offline, and ImageNet features say little about 16-pixel digits anyway. So, once per dataset,
GenLoop trains a small CNN on that dataset's training split and caches it; the metrics then compare
images in *its* feature space. The numbers are therefore not comparable with published FIDs, only with
each other on the same dataset and feature net, which is why every result names the net (``id``,
``sha256``) and is reported next to the floor that real held-out images reach.

Labelled datasets train a classifier. Unlabelled ones train the same net contrastively (SimCLR, Chen et
al. 2020: two augmented views of each image must find each other among the batch, NT-Xent loss), so
images that look alike get nearby features without any label. It replaced a rotation predictor, whose
features on a folder of artworks reached 45 % held-out accuracy and ranked grey noise above recognisable
blobs; the contrastive net's quality is reported as kNN / linear-probe accuracy where labels exist and as
augmentation-retrieval accuracy where they do not (:func:`encoder_quality`), and every new net is checked
by :mod:`.sanity` (do the metrics rank known degradations correctly in its feature space?).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.image import ImageBatches, ImageDataset, to_float
from ..errors import DataError, NotFoundError
from ..paths import cache_dir
from ..serialization import load_tensors, save_tensors, sha256_file

# Bump whenever the architecture or the training recipe changes: it is part of the cache key, so
# stale nets are never reused, and part of the extractor id printed with every metric.
REFNET_VERSION = "refnet-v2"


@dataclass(frozen=True)
class RefNetConfig:
    """Everything needed to rebuild a ReferenceNet before loading its weights."""

    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 10
    feature_dim: int = 128
    width: int = 32
    head_hidden: int = 0  # > 0: a two-layer head (the contrastive projection MLP); 0: one linear layer


@dataclass(frozen=True)
class TrainRecipe:
    """How the reference net is trained: a few epochs of Adam, one-cycle schedule (warm-up, cosine decay)."""

    batch_size: int = 64
    epochs: int = 8
    min_steps: int = 200  # tiny datasets still get enough updates
    max_steps: int = 2000  # large datasets stay quick on a CPU; the net is a yardstick, not a product
    lr: float = 3e-3


@dataclass(frozen=True)
class ContrastiveRecipe:
    """How the contrastive net is trained: large batches (more negatives), a fixed step budget.

    Fixed steps rather than a time budget keep the net a function of data and seed. 200 steps of 256
    images (512 views) take about a minute at 32 px on one CPU thread; the temperature of 0.2 is the
    usual choice for small batches (SimCLR's ablation: lower is better until it becomes unstable).
    """

    batch_size: int = 256
    epochs: int = 60
    min_steps: int = 100
    max_steps: int = 200
    lr: float = 3e-3
    temperature: float = 0.2
    proj_dim: int = 64


def _strides(image_size: int) -> list[int]:
    """Halve the resolution in each of the three blocks while it is at least 8 px, so the last map is 4-8 px.

    That keeps the cost near-constant per pixel budget: 16x16 inputs run at 8/4/4, 32x32 at 16/8/4.
    """
    strides, size = [], image_size
    for _ in range(3):
        s = 2 if size >= 8 else 1
        strides.append(s)
        size = (size + s - 1) // s
    return strides


class ReferenceNet(nn.Module):
    """Three conv blocks (conv 3x3, BatchNorm, ReLU), global average pool, a ``feature_dim`` layer, a head.

    ``features(x)`` are the penultimate activations (after ReLU, like Inception's pool3 features);
    ``forward(x)`` returns the head's logits.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        feature_dim: int = 128,
        width: int = 32,
        head_hidden: int = 0,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3, 4):
            raise DataError(f"the reference net takes 1, 3 or 4 channels, got {in_channels}")
        if not 8 <= image_size <= 64:
            raise DataError(f"the reference net takes images of 8 to 64 px, got {image_size}")
        self.config = RefNetConfig(in_channels, image_size, num_classes, feature_dim, width, head_hidden)
        chans = [in_channels, width, 2 * width, 4 * width]
        blocks: list[nn.Module] = []
        for c_in, c_out, stride in zip(chans[:-1], chans[1:], _strides(image_size)):
            blocks += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(chans[-1], feature_dim), nn.ReLU(inplace=True))
        self.head: nn.Module = (
            nn.Sequential(
                nn.Linear(feature_dim, head_hidden), nn.ReLU(inplace=True), nn.Linear(head_hidden, num_classes)
            )
            if head_hidden
            else nn.Linear(feature_dim, num_classes)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureExtractor:
    """A trained ReferenceNet in eval mode: batched, gradient-free features and class probabilities.

    ``id`` names the net (version + cache key) and ``sha256`` its weights file, so a metric can always
    say exactly which yardstick measured it.
    """

    def __init__(
        self,
        net: ReferenceNet,
        *,
        id: str,
        sha256: str,
        accuracy: float,
        kind: str,
        accuracy_split: str = "val",
        device: torch.device | str = "cpu",
        quality: dict[str, Any] | None = None,
        sanity: dict[str, Any] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.id, self.sha256, self.accuracy, self.kind = id, sha256, float(accuracy), kind
        self.accuracy_split = accuracy_split
        # how good the features are (encoder_quality) and whether the metrics see degradations in them
        # (sanity.run_sanity): both measured once, when the net was trained, and cached with it
        self.quality, self.sanity = quality, sanity
        self.num_classes = net.config.num_classes
        self.feature_dim = net.config.feature_dim
        self.channels = net.config.in_channels
        self.image_size = net.config.image_size

    def __repr__(self) -> str:
        return (
            f"FeatureExtractor(id={self.id!r}, kind={self.kind!r}, accuracy={self.accuracy:.4f}, "
            f"feature_dim={self.feature_dim}, num_classes={self.num_classes})"
        )

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise DataError(f"expected a tensor of images, got {type(x).__name__}")
        if x.dtype == torch.uint8:
            x = to_float(x)
        want = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise DataError(
                f"images of shape {tuple(x.shape)} do not fit the feature net, "
                f"which expects (N, {', '.join(map(str, want))})"
            )
        if not torch.isfinite(x).all():
            raise DataError("images contain NaN or infinite values")
        return x

    @torch.no_grad()
    def features_and_probs(self, x: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (N, D) and softmax probabilities (N, K), both float64 on the CPU, in one pass."""
        x = self._check(x)
        feats, probs = [], []
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(self.device, torch.float32)
            f = self.net.features(xb)
            feats.append(f.double().cpu())
            probs.append(F.softmax(self.net.head(f).double(), dim=1).cpu())
        d, k = self.feature_dim, self.num_classes
        return (
            torch.cat(feats) if feats else torch.empty(0, d, dtype=torch.float64),
            torch.cat(probs) if probs else torch.empty(0, k, dtype=torch.float64),
        )

    def features(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Penultimate activations, float64 (N, feature_dim)."""
        return self.features_and_probs(x, batch_size)[0]

    def probs(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Softmax over the head's outputs, float64 (N, num_classes): class probabilities for a classifier;
        for the contrastive net a softmax over its projection, which has no meaning (no IS is computed)."""
        return self.features_and_probs(x, batch_size)[1]


def _n_classes(dataset: ImageDataset) -> int:
    labels = dataset.labels
    return dataset.num_classes or (int(labels.max()) + 1 if labels is not None and labels.numel() else 0)


def default_kind(dataset: ImageDataset) -> str:
    """``classifier`` for labelled data (two classes or more), ``contrastive`` for everything else."""
    return "classifier" if dataset.labels is not None and _n_classes(dataset) >= 2 else "contrastive"


def cache_key(dataset: ImageDataset, seed: int = 0, kind: str | None = None) -> str:
    """sha256 over what determines the trained net: the data, its shape, the recipe version, kind and seed."""
    payload = {
        "source_hash": dataset.source_hash,
        "image_size": dataset.image_size,
        "channels": dataset.channels,
        "version": REFNET_VERSION,
        "seed": int(seed),
        "kind": kind or default_kind(dataset),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def simclr_views(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image in ``x`` (float, [-1, 1]): SimCLR's augmentations, sized for 8-64 px.

    Geometry, in one ``grid_sample``: a random resized crop of 35-100 % of the area (SimCLR's 8 % lower
    bound leaves a few pixels of a 16-px image, nothing to recognise), aspect 3/4-4/3, a horizontal flip
    half the time and a translation of up to 1/16 of the side beyond the crop. Colour, 80 % of the time:
    brightness, contrast and (RGB) saturation jitter, then 20 % grey for RGB — without it the net could
    match views by their colour histogram alone and learn nothing about shape. Alpha is left alone.
    """
    n, c, h, w = x.shape
    g = generator
    area = _uniform(n, 0.35, 1.0, g)
    ratio = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), g))
    sx, sy = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
    shift = 2.0 * max(1, w // 16) / w  # in grid units: the side spans 2
    tx = (1 - sx) * _uniform(n, -1, 1, g) + shift * _uniform(n, -1, 1, g)
    ty = (1 - sy) * _uniform(n, -1, 1, g) + shift * _uniform(n, -1, 1, g)
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([sx * flip, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="border", align_corners=False)

    colour = out[:, :3] if c >= 3 else out[:, :1]
    apply = (torch.rand(n, generator=g) < 0.8).to(x.dtype).view(n, 1, 1, 1)
    bright = _uniform(n, -0.4, 0.4, g).view(n, 1, 1, 1)
    contrast = _uniform(n, 0.6, 1.4, g).view(n, 1, 1, 1)
    mean = colour.mean(dim=(1, 2, 3), keepdim=True)
    jittered = (colour - mean) * contrast + mean + bright
    if c >= 3:
        sat = _uniform(n, 0.6, 1.4, g).view(n, 1, 1, 1)
        grey = jittered.mean(1, keepdim=True)
        jittered = grey + (jittered - grey) * sat
        to_grey = (torch.rand(n, generator=g) < 0.2).view(n, 1, 1, 1)
        jittered = torch.where(to_grey, jittered.mean(1, keepdim=True).expand_as(jittered), jittered)
    colour = (apply * jittered + (1 - apply) * colour).clamp(-1.0, 1.0)
    return torch.cat([colour, out[:, colour.shape[1] :]], 1) if c == 4 else colour


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss: each view must pick its partner out of the other 2N - 2 views of the batch."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


@torch.no_grad()
def _accuracy(net: ReferenceNet, x: torch.Tensor, y: torch.Tensor, device: torch.device, bs: int = 512) -> float:
    net.eval()
    correct = 0
    for i in range(0, x.shape[0], bs):
        logits = net(x[i : i + bs].to(device))
        correct += int((logits.argmax(1).cpu() == y[i : i + bs]).sum())
    return correct / max(1, x.shape[0])


def _eval_split(dataset: ImageDataset) -> str:
    return next((s for s in ("val", "test") if s in dataset.splits and dataset.splits[s].numel()), "train")


def encoder_quality(
    extractor: Any, dataset: ImageDataset, seed: int = 0, retrieval_n: int = 256, max_train: int = 5000
) -> dict[str, Any]:
    """How much the features know, measured the same way for any net so a classifier and a contrastive
    net can be compared on labelled data.

    - ``retrieval_top1``: two random views (:func:`simclr_views`) of ``retrieval_n`` held-out images;
      the share of first views whose nearest second view (cosine) is their own. Chance is 1/N. Needs no
      labels, so it is the number for an unlabelled folder.
    - ``knn_accuracy`` (k=10, cosine vote) and ``linear_probe_accuracy`` (logistic regression on
      standardised features), trained on the train split's features and scored on the held-out split:
      only where labels exist. The probe is the usual yardstick of self-supervised features.
    """
    split = _eval_split(dataset)
    held, held_y = dataset.get(split)
    held = to_float(held)
    g = torch.Generator().manual_seed(seed + 11)
    pick = torch.randperm(held.shape[0], generator=g)[:retrieval_n]
    v1, v2 = simclr_views(held[pick], g), simclr_views(held[pick], g)
    f1, f2 = (F.normalize(extractor.features(v).float(), dim=1) for v in (v1, v2))
    top1 = float((((f1 @ f2.T).argmax(1)) == torch.arange(len(pick))).float().mean())
    out: dict[str, Any] = {"split": split, "retrieval_top1": top1, "retrieval_n": len(pick)}
    if held_y is None or default_kind(dataset) != "classifier":
        return out
    train_x, train_y = dataset.get("train")
    assert train_y is not None
    idx = torch.randperm(train_x.shape[0], generator=g)[:max_train]
    ftr = extractor.features(to_float(train_x[idx])).float()
    fte = extractor.features(held).float()
    ytr = train_y[idx]
    k = min(10, ftr.shape[0])
    nn_idx = (F.normalize(fte, dim=1) @ F.normalize(ftr, dim=1).T).topk(k, dim=1).indices
    votes = F.one_hot(ytr[nn_idx], _n_classes(dataset)).sum(1)
    out["knn_accuracy"] = float((votes.argmax(1) == held_y).float().mean())
    out["knn_k"] = k
    out["linear_probe_accuracy"] = _linear_probe(ftr.numpy(), ytr.numpy(), fte.numpy(), held_y.numpy())
    return out


def _linear_probe(xtr: Any, ytr: Any, xte: Any, yte: Any) -> float:
    """Held-out accuracy of a multinomial logistic regression on standardised features (scikit-learn)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(xtr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(max_iter=300, C=1.0).fit(scaler.transform(xtr), ytr)
    return float(clf.score(scaler.transform(xte), yte))


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Train on one intra-op thread on the CPU, restoring the caller's setting afterwards.

    Two reasons. Reproducibility: the thread count changes the order of floating-point reductions, so
    the same seed gives different weights (and a different ``sha256``) on machines with different core
    counts; with one thread the net is a function of the data and seed alone. Robustness: this net is
    too small to gain much from more threads, while on a shared, busy machine OpenMP threads that spin
    waiting for each other made training ~10x slower (4 s -> 50 s on digits) in our measurements.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_reference_net(
    dataset: ImageDataset,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = False,
    recipe: TrainRecipe | ContrastiveRecipe | None = None,
    kind: str | None = None,
) -> tuple[ReferenceNet, dict[str, Any]]:
    """Train a ReferenceNet on ``dataset``'s train split; return it and its state (accuracy, kind, quality).

    ``kind`` is ``classifier`` (needs labels) or ``contrastive``; by default the first for labelled data.
    Never looks at the test split unless the val split is empty, and then only to report accuracy.
    Seeded and, on the CPU, single-threaded: the same dataset and seed give bit-identical weights (for the
    same torch version and device type).
    """
    device = torch.device(device)
    kind = kind or default_kind(dataset)
    if kind not in ("classifier", "contrastive"):
        raise DataError(f"unknown reference net kind {kind!r}; valid: classifier, contrastive")
    if kind == "classifier" and default_kind(dataset) != "classifier":
        raise DataError(f"dataset {dataset.name!r} has no labels (two classes or more) to train a classifier on")
    if recipe is None:
        recipe = TrainRecipe() if kind == "classifier" else ContrastiveRecipe()
    contrastive = isinstance(recipe, ContrastiveRecipe)
    if contrastive != (kind == "contrastive"):
        raise DataError(f"a {type(recipe).__name__} does not train a {kind} net")

    train_x, train_y = dataset.get("train")
    if train_x.shape[0] == 0:
        raise DataError(f"dataset {dataset.name!r} has an empty train split; the feature net has nothing to learn from")
    eval_split = _eval_split(dataset)
    if contrastive:
        num_classes, head_hidden = recipe.proj_dim, 128  # type: ignore[union-attr]
        batches = ImageBatches(train_x, None, recipe.batch_size, seed=seed, device="cpu")
    else:
        num_classes, head_hidden = _n_classes(dataset), 0
        shift = max(1, dataset.image_size // 16)  # ~2 px at 32 px: enough to stop memorising positions
        batches = ImageBatches(train_x, train_y, recipe.batch_size, seed=seed, shift=shift, device="cpu")
    steps_per_epoch = max(1, train_x.shape[0] // batches.batch_size)
    steps = min(recipe.max_steps, max(recipe.min_steps, recipe.epochs * steps_per_epoch))

    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        net = ReferenceNet(dataset.channels, dataset.image_size, num_classes, head_hidden=head_hidden).to(device)
    aug_gen = torch.Generator().manual_seed(seed + 7)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps, pct_start=0.15)

    t0 = time.perf_counter()
    if progress:  # the first eval of a dataset spends minutes here: say so before the first logged step
        print(
            f"eval: training the reference feature net ({kind}) for {dataset.name!r}, {steps} steps "
            "(once per dataset, then cached)...",
            file=sys.stderr,
            flush=True,
        )
    net.train()
    with _one_cpu_thread(device):
        temperature = recipe.temperature if isinstance(recipe, ContrastiveRecipe) else None
        _fit(net, batches, opt, sched, steps, temperature, aug_gen, device, progress, steps_per_epoch)
        net.eval()
        quality = encoder_quality(FeatureExtractor(net, id="", sha256="", accuracy=0, kind=kind), dataset, seed)
        if contrastive:
            acc = quality["retrieval_top1"]
        else:
            eval_x, eval_y = dataset.get(eval_split)
            acc = _accuracy(net, to_float(eval_x), eval_y, device)  # type: ignore[arg-type]
    train_seconds = time.perf_counter() - t0
    what = "augmentation-retrieval top-1" if contrastive else "accuracy"
    if progress:
        print(f"feature net ({kind}) {eval_split} {what} {acc:.4f} in {train_seconds:.1f}s", file=sys.stderr)
    state = {
        "version": REFNET_VERSION,
        "kind": kind,
        "num_classes": num_classes,
        "accuracy": acc,
        "accuracy_split": eval_split,
        "accuracy_metric": "retrieval_top1" if contrastive else "class_accuracy",
        "quality": quality,
        "arch": asdict(net.config),
        "recipe": asdict(recipe),
        "steps": steps,
        "seed": int(seed),
        "dataset": dataset.name,
        "source_hash": dataset.source_hash,
    }
    return net.eval(), state


def _fit(
    net: ReferenceNet,
    batches: ImageBatches,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    steps: int,
    temperature: float | None,
    aug_gen: torch.Generator,
    device: torch.device,
    progress: bool,
    log_every: int,
) -> None:
    """The training loop: cross-entropy on labels, or (``temperature`` given) NT-Xent on two views."""
    for step in range(steps):
        x, y = next(batches)
        if temperature is not None:
            views = torch.cat([simclr_views(x, aug_gen), simclr_views(x, aug_gen)]).to(device)
            z = net(views)  # both views in one batch: BatchNorm sees them together
            loss = nt_xent(z[: x.shape[0]], z[x.shape[0] :], temperature)
        else:
            assert y is not None
            loss = F.cross_entropy(net(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step + 1) % log_every == 0:
            print(f"feature net step {step + 1}/{steps} loss {loss.item():.4f}", file=sys.stderr)


def _load_cached(path: Path, device: torch.device) -> tuple[ReferenceNet, dict[str, Any]] | None:
    """The cached net and state, or None if the file is missing, corrupt or from another version."""
    try:
        tensors, state = load_tensors(path)
        if not isinstance(state, dict) or state.get("version") != REFNET_VERSION:
            return None
        net = ReferenceNet(**state["arch"])
        net.load_state_dict(tensors)
        float(state["accuracy"]), str(state["kind"])  # the fields get_feature_extractor reads
    except (DataError, NotFoundError, KeyError, TypeError, ValueError, RuntimeError):
        return None
    return net.to(device).eval(), state


def _extractor(net: ReferenceNet, state: dict[str, Any], key: str, sha: str, device: torch.device) -> FeatureExtractor:
    return FeatureExtractor(
        net,
        id=f"{REFNET_VERSION}-{key[:12]}",
        sha256=sha,
        accuracy=float(state["accuracy"]),
        kind=state["kind"],
        accuracy_split=state.get("accuracy_split", "val"),
        device=device,
        quality=state.get("quality"),
        sanity=state.get("sanity"),
    )


def get_feature_extractor(
    dataset: ImageDataset,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = False,
    kind: str | None = None,
    sanity: bool = True,
) -> FeatureExtractor:
    """The reference feature net for ``dataset``: loaded from the cache, or trained once and cached.

    ``kind`` overrides the default (classifier for labelled data, contrastive otherwise). A newly
    trained net is put through the metric sanity suite (:func:`.sanity.run_sanity`, some seconds)
    unless ``sanity`` is False, and the result is cached with it, so every later evaluation can say
    whether its numbers can be trusted on this data without paying for the suite again.

    The cache file is ``cache_dir("features")/<key>.safetensors``; a corrupt or stale file is retrained
    over (atomically, so a concurrent reader never sees half a file).
    """
    device = torch.device(device)
    kind = kind or default_kind(dataset)
    key = cache_key(dataset, seed, kind)
    path = cache_dir("features") / f"{key}.safetensors"
    loaded = _load_cached(path, device) if path.is_file() else None
    if loaded is None:
        net, state = train_reference_net(dataset, device=device, seed=seed, progress=progress, kind=kind)
    else:
        net, state = loaded
    if loaded is None or (sanity and state.get("sanity") is None):
        if sanity:
            from .sanity import run_sanity

            if progress:
                print("eval: checking the feature net with the metric sanity suite...", file=sys.stderr, flush=True)
            with _one_cpu_thread(device):
                state["sanity"] = run_sanity(_extractor(net, state, key, "", device), dataset, seed=seed)
            state["sanity"].pop("seconds", None)  # a timing would make the file's sha256 differ run to run
            if progress:
                from .sanity import format_warning

                print(format_warning(state["sanity"]) or "metric sanity suite: passed", file=sys.stderr)
        sha = save_tensors(path, net.state_dict(), state)
    else:
        sha = sha256_file(path)
    return _extractor(net, state, key, sha, device)


__all__ = [
    "REFNET_VERSION",
    "RefNetConfig",
    "TrainRecipe",
    "ContrastiveRecipe",
    "default_kind",
    "encoder_quality",
    "simclr_views",
    "nt_xent",
    "ReferenceNet",
    "FeatureExtractor",
    "cache_key",
    "train_reference_net",
    "get_feature_extractor",
]
