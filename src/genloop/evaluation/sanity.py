"""The metric sanity suite: does each metric, in this feature net's space, rank known degradations correctly?

A metric is only as good as the features it is computed on. On a folder of artworks the old rotation
net gave a DCGAN that visibly improved a *worse* FID, and nothing warned anyone. So every reference net
is checked when it is trained (and any net by ``genloop eval RUN --sanity``): held-out real images are
split into a reference half and a test half; the test half is degraded in seven controlled ways at five
increasing levels each, and FID, KID, precision and recall against the reference half are computed at
every level (level 0 is the clean test half). A metric that sees the degradation moves monotonically
the bad way; Spearman's ρ between level and metric, signed so that +1 means "always worse as the
degradation grows", says how well it does.

The degradations (``DEGRADATIONS``): Gaussian pixel noise, Gaussian blur, JPEG compression (Pillow),
shuffling a growing number of image patches, an elastic warp of growing amplitude, replacing a growing
share of the images by noise images, and dropping a growing number of modes (classes when the data has
labels, else k-means clusters of the net's own features), the dropped images replaced by training images
of the kept modes so the sample size stays fixed (FID is biased by sample size). Each degradation uses
one fixed random draw for all levels, so level l+1 is the same corruption, only stronger.

Which metrics must move (``EXPECTED``): FID and KID for every degradation; precision (fidelity) for
all but dropped modes, which leave every sample realistic; recall (diversity) for dropped modes and
noise images, which remove real variety. Other pairs are shown but not judged.

The rule (``RULE``): a net *fails* on a degradation when FID's ρ is below 1 there — FID is the headline
number, and a ρ below 1 means some stronger corruption scored as good as or better than a weaker one.
``genloop eval`` then warns in one line, naming the degradations the net cannot see. Expected pairs of
the other metrics with ρ below 1 are marked in the table but do not trigger the warning: precision and
recall saturate (a share cannot fall below 0) and are noisy at a few hundred images.
"""

from __future__ import annotations

import io
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.image import ImageDataset, to_float, to_uint8
from ..errors import DataError
from .image_metrics import FrechetDistance, KernelInceptionDistance
from .manifold import PrecisionRecall

SANITY_VERSION = 1
DEGRADATIONS = (
    "gaussian_noise",
    "blur",
    "jpeg",
    "patch_shuffle",
    "elastic_warp",
    "noise_images",
    "drop_modes",
)
LABELS = {
    "gaussian_noise": "Gaussian noise (σ)",
    "blur": "blur (σ, px)",
    "jpeg": "JPEG (quality)",
    "patch_shuffle": "shuffled patches (share)",
    "elastic_warp": "elastic warp (px)",
    "noise_images": "noise images (share)",
    "drop_modes": "dropped modes (count)",
}
METRICS = ("fid", "kid", "precision", "recall")
WORSE_IS_HIGHER = {"fid": True, "kid": True, "precision": False, "recall": False}
FIDELITY = ("gaussian_noise", "blur", "jpeg", "patch_shuffle", "elastic_warp", "noise_images")
EXPECTED = {
    "fid": DEGRADATIONS,
    "kid": DEGRADATIONS,
    "precision": FIDELITY,
    "recall": ("noise_images", "drop_modes"),
}
RULE = "a net fails on a degradation when FID's Spearman ρ over levels 0-5 is below 1"
N_LEVELS = 5
PR_K = 3
MIN_HELDOUT = 2 * (PR_K + 2)  # held-out images the suite needs (half reference, half degraded, each > k + 1)


# ---------------------------------------------------------------------------------------------- degradations


def _size_scale(x: torch.Tensor) -> float:
    """Blur and warp strengths are given for 32 px and scaled with the side (never below 32 px's)."""
    return max(1.0, x.shape[-1] / 32)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    u8 = to_uint8(x).permute(0, 2, 3, 1).numpy()
    out = []
    for img in u8:
        c = img.shape[-1]
        pil = Image.fromarray(img[..., 0] if c == 1 else img[..., :3], "L" if c == 1 else "RGB")
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality))
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L" if c == 1 else "RGB"))
        dec = dec[..., None] if c == 1 else dec
        out.append(np.concatenate([dec, img[..., 3:]], -1) if c == 4 else dec)
    return to_float(torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous())


def _patch_shuffle(x: torch.Tensor, share: float, g: torch.Generator) -> torch.Tensor:
    """Move a ``share`` of each image's 4x4 grid of patches one step round a cycle (a fixed random order)."""
    n, c, h, w = x.shape
    grid = 4
    p = h // grid
    core = x[:, :, : p * grid, : p * grid]
    patches = core.reshape(n, c, grid, p, grid, p).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, p, p)
    total = grid * grid
    m = max(2, round(share * total))
    out = x.clone()
    idx = torch.arange(total).repeat(n, 1)
    for i in range(n):
        order = torch.randperm(total, generator=g)[:m]
        idx[i, order] = order.roll(-1)
    shuffled = torch.gather(patches, 1, idx.view(n, total, 1, 1, 1).expand_as(patches))
    core = shuffled.reshape(n, grid, grid, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(n, c, p * grid, p * grid)
    out[:, :, : p * grid, : p * grid] = core
    return out


def _elastic(x: torch.Tensor, amplitude_px: float, field: torch.Tensor) -> torch.Tensor:
    """Warp by a smooth random displacement field (unit peak), scaled to ``amplitude_px`` pixels."""
    n, _, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype).expand(n, 2, 3)
    base = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    disp = field.permute(0, 2, 3, 1) * (2 * amplitude_px / w)
    return F.grid_sample(x, base + disp, mode="bilinear", padding_mode="border", align_corners=False)


def _smooth_field(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    coarse = torch.randn(n, 2, 4, 4, generator=g)
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return field / field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)


# ----------------------------------------------------------------------------------------------------- suite


def _metrics(ref: torch.Tensor, feats: torch.Tensor, seed: int) -> dict[str, float]:
    fid = FrechetDistance()
    fid.update(ref, real=True)
    fid.update(feats, real=False)
    kid = KernelInceptionDistance(subsets=20, seed=seed)
    kid.update(ref, real=True)
    kid.update(feats, real=False)
    pr = PrecisionRecall(k=PR_K)
    pr.update(ref, real=True)
    pr.update(feats, real=False)
    p = pr.compute()
    return {"fid": fid.compute()["fid"], "kid": kid.compute()["kid_mean"], **{m: p[m] for m in ("precision", "recall")}}


def _modes(
    extractor: Any,
    dataset: ImageDataset,
    test_y: torch.Tensor | None,
    pool: torch.Tensor,
    pool_y: torch.Tensor | None,
    test_feats: torch.Tensor,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Each test and pool image's mode: its class, or its k-means cluster (k=10) in the net's features."""
    if test_y is not None and pool_y is not None:
        return test_y, pool_y, "classes"
    from sklearn.cluster import KMeans

    pool_feats = extractor.features(pool).float().numpy()
    both = np.concatenate([test_feats.float().numpy(), pool_feats])
    k = min(10, max(2, both.shape[0] // 20))
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(both)
    lab = torch.from_numpy(km.labels_.astype(np.int64))
    return lab[: test_feats.shape[0]], lab[test_feats.shape[0] :], f"k-means clusters of the net's features (k={k})"


def _drop_modes(
    test: torch.Tensor,
    test_m: torch.Tensor,
    pool: torch.Tensor,
    pool_m: torch.Tensor,
    dropped: list[int],
    g: torch.Generator,
) -> torch.Tensor:
    """Replace every test image of a dropped mode by a pool image of a kept mode (without replacement while
    the pool lasts), so the set keeps its size and only loses variety."""
    out = test.clone()
    drop = torch.isin(test_m, torch.tensor(dropped, dtype=test_m.dtype))
    kept_pool = torch.nonzero(~torch.isin(pool_m, torch.tensor(dropped, dtype=pool_m.dtype))).squeeze(1)
    need = int(drop.sum())
    if need == 0 or kept_pool.numel() == 0:
        return out
    order = kept_pool[torch.randperm(kept_pool.numel(), generator=g)]
    pick = order.repeat(math.ceil(need / order.numel()))[:need]
    out[drop] = pool[pick]
    return out


def _spearman(values: list[float], worse_is_higher: bool) -> float | None:
    """ρ between level and metric, signed so +1 is 'always worse as the degradation grows'; None if undefined."""
    from scipy.stats import spearmanr

    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all() or np.ptp(v) == 0:
        return None
    rho = float(spearmanr(np.arange(len(v)), v).statistic)
    return round(rho if worse_is_higher else -rho, 4)


def run_sanity(
    extractor: Any,
    dataset: ImageDataset,
    seed: int = 0,
    max_images: int = 500,
    pool_images: int = 2000,
    degradations: tuple[str, ...] = DEGRADATIONS,
) -> dict[str, Any]:
    """Run the suite for ``extractor`` (anything with ``features(images)``) on ``dataset``'s held-out images.

    Uses at most ``max_images`` val+test images (half reference, half degraded) and ``pool_images``
    training images (only to refill dropped modes). Seeded: the same net, data and seed give the same
    table. Returns a JSON-able dict: per degradation its level parameters, every metric at levels 0-5 and
    the signed ρ, plus ``failures`` (see :data:`RULE`) and ``expected``.
    """
    t0 = time.perf_counter()
    parts = [dataset.get(s) for s in ("val", "test") if s in dataset.splits]
    held = torch.cat([p[0] for p in parts]) if parts else dataset.images[:0]
    held_y = torch.cat([p[1] for p in parts]) if parts and parts[0][1] is not None else None  # type: ignore[misc]
    g = torch.Generator().manual_seed(seed + 101)
    perm = torch.randperm(held.shape[0], generator=g)[:max_images]
    half = perm.numel() // 2
    if half < PR_K + 2:
        raise DataError(f"the sanity suite needs at least {MIN_HELDOUT} held-out images, got {held.shape[0]}")
    ref, test = to_float(held[perm[:half]]), to_float(held[perm[half : 2 * half]])
    test_y = held_y[perm[half : 2 * half]] if held_y is not None else None
    train_x, train_y = dataset.get("train")
    pool_idx = torch.randperm(train_x.shape[0], generator=g)[:pool_images]
    pool = to_float(train_x[pool_idx])
    pool_y = train_y[pool_idx] if train_y is not None else None

    ref_feats = extractor.features(ref)
    test_feats = extractor.features(test)
    clean = _metrics(ref_feats, test_feats, seed)
    scale = _size_scale(test)
    n, c, s = test.shape[0], test.shape[1], test.shape[-1]
    noise = torch.randn(test.shape, generator=g)
    field = _smooth_field(n, s, g)
    noise_images = torch.rand(test.shape, generator=g) * 2 - 1
    replace_order = torch.randperm(n, generator=g)
    modes_info = ""
    test_m = pool_m = mode_order = None
    if "drop_modes" in degradations:
        test_m, pool_m, modes_info = _modes(extractor, dataset, test_y, pool, pool_y, test_feats, seed)
        n_modes = int(torch.cat([test_m, pool_m]).max()) + 1
        mode_order = torch.randperm(n_modes, generator=g).tolist()

    # level parameters (for 32 px; blur and warp scale with the side)
    params: dict[str, list[float]] = {
        "gaussian_noise": [0.1, 0.2, 0.3, 0.45, 0.7],
        "blur": [round(v * scale, 3) for v in (0.4, 0.6, 0.9, 1.3, 2.0)],
        "jpeg": [60, 40, 25, 12, 5],
        "patch_shuffle": [0.2, 0.4, 0.6, 0.8, 1.0],
        "elastic_warp": [round(v * scale, 3) for v in (0.5, 1.0, 1.5, 2.5, 4.0)],
        "noise_images": [0.1, 0.2, 0.3, 0.4, 0.5],
    }
    if mode_order is not None:
        k = len(mode_order)
        params["drop_modes"] = sorted({max(1, min(k - 1, round(lv * (k - 1) / N_LEVELS))) for lv in range(1, 6)})
        while len(params["drop_modes"]) < N_LEVELS:  # few modes: repeat the last (ρ then shows the plateau)
            params["drop_modes"].append(params["drop_modes"][-1])

    def degrade(name: str, level: int) -> torch.Tensor:
        v = params[name][level]
        lg = torch.Generator().manual_seed(seed + 1000 + DEGRADATIONS.index(name))  # same draw at every level
        if name == "gaussian_noise":
            return (test + v * noise).clamp(-1, 1)
        if name == "blur":
            return _blur(test, float(v))
        if name == "jpeg":
            return _jpeg(test, int(v))
        if name == "patch_shuffle":
            return _patch_shuffle(test, float(v), lg)
        if name == "elastic_warp":
            return _elastic(test, float(v), field)
        if name == "noise_images":
            out = test.clone()
            idx = replace_order[: round(float(v) * n)]
            out[idx] = noise_images[idx]
            return out
        assert mode_order is not None and test_m is not None and pool_m is not None
        return _drop_modes(test, test_m, pool, pool_m, mode_order[: int(v)], lg)

    table: dict[str, Any] = {}
    failures: list[str] = []
    for name in degradations:
        if name not in params:
            continue
        values = {m: [clean[m]] for m in METRICS}
        for level in range(N_LEVELS):
            got = _metrics(ref_feats, extractor.features(degrade(name, level)), seed)
            for m in METRICS:
                values[m].append(got[m])
        rho = {m: _spearman(values[m], WORSE_IS_HIGHER[m]) for m in METRICS}
        table[name] = {
            "levels": params[name],
            "values": {m: [round(float(x), 6) for x in v] for m, v in values.items()},
            "rho": rho,
        }
        if rho["fid"] is None or rho["fid"] < 1:
            failures.append(name)
    return {
        "version": SANITY_VERSION,
        "n_reference": int(half),
        "n_degraded": int(half),
        "channels": int(c),
        "image_size": int(s),
        "modes": modes_info,
        "seed": int(seed),
        "rule": RULE,
        "expected": {m: [d for d in EXPECTED[m] if d in table] for m in METRICS},
        "degradations": table,
        "failures": failures,
        "passed": not failures,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def sanity_for_run(
    run_id: str,
    runs_dir: Any = None,
    features: str = "ref",
    weights: Any = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """The suite for a run's data and feature net (``genloop eval RUN --sanity``), written to eval/sanity.json.

    The reference net's result is the one cached when it was trained; any other backbone is checked now.
    """
    from ..config import from_dict
    from ..data import DataConfig, load_dataset
    from ..runs import RunStore
    from ..serialization import write_json
    from .protocol import feature_extractor

    run = RunStore(runs_dir).get(run_id)
    dataset = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
    extractor = feature_extractor(dataset, features, weights, device, progress)
    result = dict(getattr(extractor, "sanity", None) or run_sanity(extractor, dataset))
    result["feature_net"] = {"id": extractor.id, "kind": extractor.kind, "quality": getattr(extractor, "quality", None)}
    path = run.files.eval_metrics().parent / "sanity.json"
    write_json(path, result)
    return {**result, "path": str(path)}


# ---------------------------------------------------------------------------------------------- presentation


def rows(sanity: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per degradation: its label, its levels and, per metric, ρ as text and whether it is a miss
    (an expected pair below 1) or not judged. The CLI table and the HTML report both read these."""
    if not isinstance(sanity, dict) or not isinstance(sanity.get("degradations"), dict):
        return []
    expected = sanity.get("expected") or {}
    out = []
    for name, body in sanity["degradations"].items():
        cells = []
        for m in METRICS:
            rho = (body.get("rho") or {}).get(m)
            judged = name in expected.get(m, ())
            text = "n/a" if rho is None else f"{rho:+.2f}"
            cells.append({"metric": m, "text": text, "judged": judged, "miss": judged and (rho is None or rho < 1)})
        out.append(
            {
                "name": name,
                "label": LABELS.get(name, name),
                "levels": ", ".join(f"{v:g}" for v in body.get("levels", [])),
                "cells": cells,
                "failed": name in sanity.get("failures", ()),
            }
        )
    return out


def format_warning(sanity: dict[str, Any] | None) -> str | None:
    """The one line ``genloop eval`` prints when the net failed the suite (None when it passed or was not run)."""
    if not isinstance(sanity, dict) or not sanity.get("failures"):
        return None
    names = ", ".join(LABELS.get(f, f).split(" (")[0] for f in sanity["failures"])
    return (
        f"warning: the feature net's FID does not grow steadily with {names} on this data (metric sanity suite, "
        "Spearman ρ < 1): its numbers are not trustworthy here; `genloop eval RUN --sanity` shows the table"
    )


__all__ = ["DEGRADATIONS", "EXPECTED", "METRICS", "RULE", "run_sanity", "sanity_for_run", "rows", "format_warning"]
