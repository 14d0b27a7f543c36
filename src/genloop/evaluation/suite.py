"""Every image metric at once, each beside its real-data floor: :func:`evaluate_images`.

A metric without context misleads: an FID of 3.2 means nothing until you know that two disjoint sets of
*real* images score 1.9 on the same net and sample sizes. So every number here comes with its floor:
the same metric computed for real training images (a seeded subset of the same size as the generated
set) against the same held-out reference. A perfect model that reproduced the data distribution would
score the floor, not zero.

What is measured, on the feature net's features unless said otherwise:
- ``fid``, ``kid``: distances between the generated and held-out distributions (lower is better).
- ``is``: the classifier-based Inception Score (class nets only), beside the held-out set's own IS.
- ``precision``/``recall`` (k=3, Kynkäänniemi et al. 2019): fidelity and diversity as shares of samples
  inside the other set's k-NN manifold; ``density``/``coverage`` (k=5, Naeem et al. 2020), their
  outlier-robust versions.
- ``class_accuracy``: for a conditional model, the share of samples the reference classifier puts in
  the class they were asked for; the floor is the classifier's accuracy on held-out real images.
  ``per_class_fid``: FID within each class (few reference images per class, so compare with its floor).
- ``copy_rate``: the share of samples that are near copies of a training image, in pixel space
  (:mod:`.memorization`); the floor is the same share for held-out real images.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from typing import Any

import torch

from ..data.image import ImageDataset
from ..errors import DataError
from .image_metrics import FrechetDistance, InceptionScore, KernelInceptionDistance
from .manifold import DensityCoverage, PrecisionRecall
from .memorization import memorization
from .real_cache import cached_features_and_probs

ALL_METRICS = ("fid", "kid", "is", "prdc", "class", "memorization")
PR_K, DC_K = 3, 5


def _batches(generated: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(generated, torch.Tensor):
        if generated.dim() != 4:
            raise DataError(f"generated images must be (N, C, H, W), got shape {tuple(generated.shape)}")
        yield from generated.split(batch_size)
    else:
        for b in generated:
            if not isinstance(b, torch.Tensor):
                raise DataError(f"generated batches must be tensors, got {type(b).__name__}")
            yield b


def _fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    m = FrechetDistance()
    m.update(real, real=True)
    m.update(fake, real=False)
    return m.compute()["fid"]


def _kid(real: torch.Tensor, fake: torch.Tensor, seed: int) -> tuple[float, float]:
    m = KernelInceptionDistance(seed=seed)
    m.update(real, real=True)
    m.update(fake, real=False)
    r = m.compute()
    return r["kid_mean"], r["kid_std"]


def _prdc(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    pr, dc = PrecisionRecall(k=PR_K), DensityCoverage(k=DC_K)
    for m in (pr, dc):
        m.update(real, real=True)
        m.update(fake, real=False)
    return {**pr.compute(), **dc.compute()}


def evaluate_images(
    generated: torch.Tensor | Iterable[torch.Tensor],
    dataset: ImageDataset,
    extractor: Any,
    seed: int = 0,
    batch_size: int = 256,
    labels: torch.Tensor | None = None,
    metrics: Collection[str] = ALL_METRICS,
) -> dict[str, Any]:
    """Score ``generated`` against the held-out real images, each metric beside its real-data floor.

    ``generated`` is a float tensor in [-1, 1] of shape (N, C, S, S), or an iterable of such batches.
    Values outside [-1, 1] are clamped, as saving them would. ``labels`` are the classes the images were
    asked for (conditional models). ``metrics`` picks groups from :data:`ALL_METRICS`.

    The reference is the 'val' and 'test' splits together, images the generator never trained on. The
    floor scores a seeded random subset of the *training* images, of the same size as the generated set
    (or all of train if smaller), against that same reference: FID in particular is biased by sample
    size, so the floor uses comparable sizes. ``extractor`` is GenLoop's reference net or the Inception
    backend; anything with ``features_and_probs``, ``id``, ``sha256``, ``kind`` works.
    """
    unknown = set(metrics) - set(ALL_METRICS)
    if unknown:
        raise DataError(f"unknown metric group(s) {sorted(unknown)}; valid: {', '.join(ALL_METRICS)}")
    ref_parts = [dataset.get(s) for s in ("val", "test") if s in dataset.splits]
    ref_images = torch.cat([p[0] for p in ref_parts]) if ref_parts else dataset.images[:0]
    ref_labels = torch.cat([p[1] for p in ref_parts]) if ref_parts and ref_parts[0][1] is not None else None
    if ref_images.shape[0] < 2:
        raise DataError(
            f"dataset {dataset.name!r} has {ref_images.shape[0]} held-out (val+test) images; "
            "evaluation needs at least 2"
        )

    gen_images, gen_feats, gen_probs = [], [], []
    for b in _batches(generated, batch_size):
        if b.is_floating_point():
            if not torch.isfinite(b).all():
                raise DataError("generated images contain NaN or infinite values")
            b = b.clamp(-1.0, 1.0)
        f, p = extractor.features_and_probs(b, batch_size)
        gen_feats.append(f)
        gen_probs.append(p)
        if "memorization" in metrics:
            gen_images.append(b)
    if not gen_feats:
        raise DataError("no generated images to evaluate")
    feats, probs = torch.cat(gen_feats), torch.cat(gen_probs)
    n_gen = feats.shape[0]
    if n_gen < 2:
        raise DataError(f"evaluation needs at least 2 generated images, got {n_gen}")
    if labels is not None and labels.shape != (n_gen,):
        raise DataError(f"got {labels.numel()} labels for {n_gen} generated images")

    ref_feats, ref_probs = cached_features_and_probs(extractor, ref_images, batch_size)  # the same every eval
    train_images, train_labels = dataset.get("train")
    n_floor = min(n_gen, train_images.shape[0])
    if n_floor < 2:
        raise DataError(
            f"dataset {dataset.name!r} has {train_images.shape[0]} training images; the floor needs at least 2"
        )
    g = torch.Generator().manual_seed(seed)
    floor_idx = torch.randperm(train_images.shape[0], generator=g)[:n_floor]
    floor_feats = cached_features_and_probs(extractor, train_images[floor_idx], batch_size)[0]

    result: dict[str, Any] = {}
    if "fid" in metrics:
        result.update({"fid": _fid(ref_feats, feats), "fid_floor": _fid(ref_feats, floor_feats)})
    if "kid" in metrics:
        kid, kid_std = _kid(ref_feats, feats, seed)
        result.update({"kid": kid, "kid_std": kid_std, "kid_floor": _kid(ref_feats, floor_feats, seed)[0]})
    if "is" in metrics and extractor.kind not in ("rotation", "contrastive", "hf"):  # no classes to score
        is_gen, is_real = InceptionScore(), InceptionScore()
        is_gen.update(probs)
        is_real.update(ref_probs)
        gen_is, real_is = is_gen.compute(), is_real.compute()
        result.update({"is": gen_is["is_mean"], "is_std": gen_is["is_std"], "is_real": real_is["is_mean"]})
    if "prdc" in metrics and min(n_gen, n_floor, ref_feats.shape[0]) > DC_K:
        model, floor = _prdc(ref_feats, feats), _prdc(ref_feats, floor_feats)
        result.update(model)
        result.update({f"{k}_floor": v for k, v in floor.items()})
        result["prdc_k"] = {"precision_recall": PR_K, "density_coverage": DC_K}
    if "class" in metrics and labels is not None and extractor.kind == "classifier" and ref_labels is not None:
        result.update(
            _class_metrics(
                feats,
                probs,
                labels,
                ref_feats,
                ref_probs,
                ref_labels,
                train_images,
                train_labels,
                extractor,
                batch_size,
                seed,
            )
        )
    if "memorization" in metrics:
        samples = torch.cat(gen_images)
        train_float = _as_float(train_images)
        report = memorization(samples, train_float, _as_float(ref_images), seed=seed)
        summary = report.as_dict()
        summary["space"] = "pixels"
        result.update(
            {
                "copy_rate": report.near_copy_share,
                "copy_rate_floor": report.held_out_near_copy_share,
                "memorization": summary,
            }
        )
    accuracy = float(extractor.accuracy)
    result.update(
        {
            "n_generated": int(n_gen),
            "n_reference": int(ref_feats.shape[0]),
            "n_floor": int(n_floor),
            "reference_split": "val+test",
            "floor_split": "train",
            "seed": int(seed),
            "feature_net": {
                "id": extractor.id,
                "sha256": extractor.sha256,
                "kind": extractor.kind,
                "accuracy": accuracy if math.isfinite(accuracy) else None,
                "feature_dim": int(extractor.feature_dim),
            },
        }
    )
    # how good the net's features are, and whether the metrics see known degradations in them
    # (measured when the net was trained; see .features.encoder_quality and .sanity)
    if getattr(extractor, "quality", None):
        result["feature_net"]["quality"] = extractor.quality
    if getattr(extractor, "sanity", None):
        result["sanity"] = extractor.sanity
    return result


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()


def _class_metrics(
    feats,
    probs,
    labels,
    ref_feats,
    ref_probs,
    ref_labels,
    train_images,
    train_labels,
    extractor,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    """Conditional accuracy (and its floor: the classifier on held-out real images) and per-class FID."""
    labels = labels.cpu()
    out: dict[str, Any] = {
        "class_accuracy": float((probs.argmax(1) == labels).double().mean()),
        "class_accuracy_floor": float((ref_probs.argmax(1) == ref_labels).double().mean()),
    }
    per_class, per_class_floor = {}, {}
    g = torch.Generator().manual_seed(seed + 1)
    for c in sorted(set(labels.tolist())):
        fake_c, ref_c = feats[labels == c], ref_feats[ref_labels == c]
        train_c = torch.nonzero(train_labels == c).squeeze(1)
        if min(len(fake_c), len(ref_c), len(train_c)) < 2:
            continue
        pick = train_c[torch.randperm(len(train_c), generator=g)[: len(fake_c)]]
        per_class[str(c)] = _fid(ref_c, fake_c)
        per_class_floor[str(c)] = _fid(ref_c, cached_features_and_probs(extractor, train_images[pick], batch_size)[0])
    if per_class:
        out.update(
            {
                "per_class_fid_mean": sum(per_class.values()) / len(per_class),
                "per_class_fid_floor_mean": sum(per_class_floor.values()) / len(per_class_floor),
                "per_class_fid": per_class,
                "per_class_fid_floor": per_class_floor,
            }
        )
    return out


__all__ = ["ALL_METRICS", "evaluate_images"]
