"""Restoration metrics and the degradations they are measured on: PSNR, SSIM, hole-PSNR; mask, downsample, blur,
noise, grey.

Why these: restoration has a ground truth (the held-out image before it was degraded), so unlike sampling it is
scored pixel against pixel. PSNR is the standard distortion number; SSIM (Wang et al. 2004) follows local
structure rather than squared error; for inpainting the known pixels are given back, so PSNR over the whole
image mostly measures what was never missing — ``hole_psnr`` scores the filled-in pixels alone.

Conventions (one home for them, so every method is scored the same way):
- Images travel as GenLoop tensors, floats in [-1, 1] of shape (N, C, H, W). Metrics map them to [0, 1] and clamp
  there first (what saving a PNG would do), then score each image on its own; the caller averages.
- PSNR is ``10 log10(1 / MSE)`` on [0, 1] data, as ``skimage.metrics.peak_signal_noise_ratio(data_range=1)``
  computes it (a test checks the two agree); an exact reconstruction (MSE 0) is reported as :data:`PSNR_CAP` dB
  rather than infinity, so averages stay finite.
- SSIM is scikit-image's ``structural_similarity`` with the paper's settings: Gaussian window (σ 1.5), population
  covariance, K1 0.01, K2 0.03, data range 1; the window shrinks to the image for images under 11 px.
- The noise ``sigma`` is in [-1, 1] pixel units, the range GenLoop's tensors (and the editing core's operators) live
  in: ``sigma=0.1`` is 0.05 of the full range, 12.75 grey levels of 0..255. ``blur_sigma`` is in pixels. The noisy
  observation is not clipped: the noise model is the known one (additive Gaussian), which a known-sigma restorer
  assumes.

The degradations below are the forward operators the restorers invert. They are this module's own small versions,
kept beside the metrics until the editing core's ``genloop/generation/editing/degradations.py`` is merged; then
:func:`degrade` switches to that module's operators so that the sampler and its yardstick share one definition.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError

TASKS = ("inpaint", "upscale", "deblur", "denoise", "colorize")
PSNR_CAP = 100.0  # dB for an exact reconstruction (MSE 0)
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as GenLoop's own RGB -> grey conversion (and PIL's) uses
# Each task's degradation parameters and their defaults. All but ``fraction`` (how the mask is made) describe the
# forward operator and go to ``pipe.edit`` too; ``scale`` must divide the image size.
DEGRADATION_DEFAULTS: dict[str, dict[str, float]] = {
    "inpaint": {"fraction": 0.5},
    "upscale": {"scale": 2},
    "deblur": {"blur_sigma": 1.0},
    "denoise": {"sigma": 0.1},
    "colorize": {},
}
MASK_ONLY = ("fraction",)  # parameters that shape the mask, not the operator


# ---------------------------------------------------------------------------------------------------- metrics


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> [0, 1], clamped (what saving them would keep)."""
    return ((x.detach().float() + 1) / 2).clamp_(0, 1)


def _same_shape(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4:
        raise DataError(
            f"restored images {tuple(pred.shape)} and originals {tuple(target.shape)} must have one (N, C, H, W) shape"
        )


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image PSNR in dB of [-1, 1] images, on [0, 1] data; float64 (N,).

    ``mask`` (N, 1, H, W), 1 where pixels count: PSNR over those pixels (all channels) only — the hole of an
    inpainting. An image whose mask is empty has no such PSNR: DataError.
    """
    _same_shape(pred, target)
    err = (to_unit(pred).double() - to_unit(target).double()) ** 2
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        if mask.shape != (pred.shape[0], 1, *pred.shape[-2:]):
            want = (pred.shape[0], 1, *pred.shape[-2:])
            raise DataError(f"mask must be (N, 1, H, W) = {want}, got {tuple(mask.shape)}")
        m = mask.double().expand_as(err)
        count = m.flatten(1).sum(1)
        if bool((count == 0).any()):
            raise DataError("a mask is empty: there is no hole to score")
        mse = (err * m).flatten(1).sum(1) / count
    return (10 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_CAP / 10)))).double()


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of [-1, 1] images on [0, 1] data (scikit-image, the paper's settings); float64 (N,)."""
    from skimage.metrics import structural_similarity

    _same_shape(pred, target)
    side = min(pred.shape[-2:])
    if side < 3:
        raise DataError(f"SSIM needs images of at least 3 px, got {side}")
    win = min(11, side if side % 2 else side - 1)  # the Gaussian window's 11 px, or the largest odd size that fits
    a = to_unit(pred).permute(0, 2, 3, 1).double().numpy()
    b = to_unit(target).permute(0, 2, 3, 1).double().numpy()
    out = [
        structural_similarity(
            x,
            y,
            data_range=1.0,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            win_size=win,
        )
        for x, y in zip(a, b)
    ]
    return torch.tensor(out, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------- degradations


def centre_mask(n: int, size: int, fraction: float = 0.5) -> torch.Tensor:
    """(n, 1, size, size) float mask, 1 in a centred square covering ``fraction`` of the area (side
    ``round(size * sqrt(fraction))``, so 23 of 32 px for a half: 51.7 % of the pixels), 0 elsewhere."""
    if not 0 < fraction < 1:
        raise ConfigError(f"the inpainting hole must cover between 0 and 1 of the image, got fraction={fraction}")
    side = max(1, min(size - 1, round(size * math.sqrt(fraction))))
    lo = (size - side) // 2
    mask = torch.zeros(n, 1, size, size)
    mask[..., lo : lo + side, lo : lo + side] = 1.0
    return mask


def downsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Block average: each ``scale`` x ``scale`` block becomes one pixel."""
    if int(scale) != scale or scale < 2:
        raise ConfigError(f"scale must be a whole number >= 2, got {scale}")
    scale = int(scale)
    if x.shape[-1] % scale or x.shape[-2] % scale:
        raise ConfigError(f"scale {scale} must divide the image size {x.shape[-1]}")
    return F.avg_pool2d(x, scale)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """The normalised 1-D Gaussian of standard deviation ``sigma`` px, radius ``ceil(3 sigma)``."""
    if not sigma > 0:
        raise ConfigError(f"blur_sigma must be > 0 (pixels), got {sigma}")
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return (k / k.sum()).float()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, reflected at the borders (a photo continues past its edge; zeros would darken it)."""
    k = gaussian_kernel(sigma).to(x)
    r = k.numel() // 2
    if r >= min(x.shape[-2:]):
        raise ConfigError(f"blur_sigma {sigma} is too wide for {x.shape[-1]} px images (kernel radius {r})")
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise of standard deviation ``sigma`` in [-1, 1] pixel units; unclipped."""
    if not sigma > 0:
        raise ConfigError(f"sigma must be > 0 (noise std in [-1, 1] pixel units), got {sigma}")
    return x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma (ITU-R 601)."""
    if x.shape[1] != 3:
        raise ConfigError(f"colorize needs RGB images; these have {x.shape[1]} channel(s)")
    w = torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


@dataclass
class Degraded:
    """One task's degraded observation of a batch of originals: what every restorer is given.

    ``observation`` is in [-1, 1]: the image with its hole set to 0 (mid-grey, so the hole's content cannot leak)
    for inpaint, the small image for upscale, the blurred or noisy image, the (N, 1, H, W) grey image for
    colorize. ``mask`` (inpaint) is (N, 1, H, W) with 1 = unknown. ``operator`` holds the forward operator's
    parameters (``scale``, ``blur_sigma``, ``sigma``) as ``pipe.edit`` takes them.
    """

    task: str
    observation: torch.Tensor
    mask: torch.Tensor | None = None
    operator: dict[str, Any] = field(default_factory=dict)

    def as_image(self, shape: torch.Size) -> torch.Tensor | None:
        """The observation shown at the originals' shape without any restoration (the "input" row): pixels
        repeated for upscale; None for colorize, where that is exactly the luminance-only baseline."""
        if self.task == "colorize":
            return None
        if self.task == "upscale":
            return F.interpolate(self.observation, size=tuple(shape[-2:]), mode="nearest")
        return self.observation


def degradation_params(task: str, options: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``options`` into (this task's degradation parameters with defaults filled in, everything else).

    Everything else is for the restorer (``pipe.edit``'s own settings: steps, sampler, ...)."""
    if task not in TASKS:
        raise ConfigError(f"unknown restoration task {task!r}; valid: {', '.join(TASKS)}")
    options = dict(options or {})
    params = {k: options.pop(k, v) for k, v in DEGRADATION_DEFAULTS[task].items()}
    if "scale" in params:
        if int(params["scale"]) != params["scale"]:
            raise ConfigError(f"scale must be a whole number >= 2, got {params['scale']}")
        params["scale"] = int(params["scale"])
    for key in ("scale", "blur_sigma", "sigma", "fraction"):
        if key in options:  # a parameter of another task: say so instead of passing it on unnoticed
            raise ConfigError(f"{key} does not apply to {task}; it takes {', '.join(params) or 'no parameters'}")
    return params, options


def degrade(images: torch.Tensor, task: str, params: dict[str, Any], seed: int = 0) -> Degraded:
    """The task's observation of ``images`` ([-1, 1], (N, C, H, W)); noise is drawn from ``seed``."""
    if images.dim() != 4 or not images.is_floating_point():
        raise DataError(f"images must be float (N, C, H, W) in [-1, 1], got {images.dtype} {tuple(images.shape)}")
    x = images.float()
    operator = {k: v for k, v in params.items() if k not in MASK_ONLY}
    if task == "inpaint":
        mask = centre_mask(x.shape[0], x.shape[-1], float(params["fraction"]))
        return Degraded(task, x * (1 - mask), mask, operator)
    if task == "upscale":
        return Degraded(task, downsample(x, params["scale"]), None, operator)
    if task == "deblur":
        return Degraded(task, gaussian_blur(x, float(params["blur_sigma"])), None, operator)
    if task == "denoise":
        return Degraded(task, add_noise(x, float(params["sigma"]), torch.Generator().manual_seed(seed)), None, operator)
    if task == "colorize":
        return Degraded(task, to_grey(x), None, operator)
    raise ConfigError(f"unknown restoration task {task!r}; valid: {', '.join(TASKS)}")


def as_numpy_unit(x: torch.Tensor, clip: bool = True) -> np.ndarray:
    """[-1, 1] (N, C, H, W) tensor -> float64 (N, H, W, C) array on [0, 1] (clipped unless ``clip=False``)."""
    y = (x.detach().double() + 1) / 2
    if clip:
        y = y.clamp(0, 1)
    return y.permute(0, 2, 3, 1).numpy()


def from_numpy_unit(a: np.ndarray) -> torch.Tensor:
    """float (N, H, W, C) array on [0, 1] -> float32 [-1, 1] (N, C, H, W) tensor, clamped."""
    return (torch.from_numpy(np.ascontiguousarray(a)).float().permute(0, 3, 1, 2) * 2 - 1).clamp_(-1, 1)


# ------------------------------------------------------------------------------------------------- evaluation

GENLOOP = "genloop"  # the method name of the run's own restorer (pipe.edit) in results
INPUT = "input"  # the degraded observation itself, unrestored


def headline(task: str) -> str:
    """The metric a task is judged by: PSNR in the hole for inpainting (the rest is given back), PSNR otherwise."""
    return "hole_psnr" if task == "inpaint" else "psnr"


def restore_with_pipe(
    pipe: Any, degraded: Degraded, seed: int, edit_options: dict[str, Any], edit_task: str | None = None
) -> torch.Tensor:
    """``pipe.edit`` on the observation: the one place that knows its calling convention.

    Assumed contract (the editing core's): ``pipe.edit(images, task=..., mask=..., seed=..., **options)`` takes the
    observation in [-1, 1] as :class:`Degraded` holds it (the small image for upscale, the 1-channel grey image for
    colorize), the mask with 1 = fill, and the operator's parameters (``scale``, ``blur_sigma``, ``sigma`` in [-1, 1]
    units), and returns an ImageOutput (or a tensor) of restored images at the model's size. ``edit_task`` names
    the ``pipe.edit`` task when it is not the degradation's own (``inpaint-fast`` on the inpainting observation).
    """
    edit = getattr(pipe, "edit", None)
    if not callable(edit):
        raise ConfigError(
            f"this run's pipeline ({type(pipe).__name__}) cannot edit images: restoration needs a diffusion run (ddpm)"
        )
    kwargs = {**degraded.operator, **edit_options}
    if degraded.mask is not None:
        kwargs["mask"] = degraded.mask
    out = edit(degraded.observation, task=edit_task or degraded.task, seed=seed, **kwargs)
    x = getattr(out, "tensors", out)
    if not isinstance(x, torch.Tensor):
        raise DataError(f"pipe.edit returned {type(out).__name__}, not images")
    return x.detach().float().cpu()


def _score(
    restored: torch.Tensor,
    originals: torch.Tensor,
    degraded: Degraded,
    labels: torch.Tensor | None,
    classifier: Any,
    reference_feats: torch.Tensor | None,
    seconds: float | None,
) -> dict[str, Any]:
    if restored.shape != originals.shape:
        raise DataError(
            f"a {degraded.task} restorer returned images of shape {tuple(restored.shape)}; "
            f"the originals are {tuple(originals.shape)}"
        )
    if not torch.isfinite(restored).all():
        raise DataError(f"a {degraded.task} restorer returned NaN or infinite values")
    restored = restored.clamp(-1, 1)
    p, s = psnr(restored, originals), ssim(restored, originals)
    row: dict[str, Any] = {"psnr": float(p.mean()), "psnr_std": float(p.std()) if p.numel() > 1 else 0.0}
    row["ssim"] = float(s.mean())
    if degraded.mask is not None:
        h = psnr(restored, originals, degraded.mask)
        row.update({"hole_psnr": float(h.mean()), "hole_psnr_std": float(h.std()) if h.numel() > 1 else 0.0})
    if seconds is not None:
        row["seconds_per_image"] = seconds / originals.shape[0]
    if classifier is not None:
        feats, probs = classifier.features_and_probs(restored)
        if labels is not None and getattr(classifier, "kind", None) == "classifier":
            row["class_kept"] = float((probs.argmax(1) == labels.cpu()).double().mean())
        if reference_feats is not None:
            row["fid"] = _fid(reference_feats, feats)
    return row


def _fid(reference: torch.Tensor, feats: torch.Tensor) -> float:
    from .image_metrics import FrechetDistance

    m = FrechetDistance()
    m.update(reference, real=True)
    m.update(feats, real=False)
    return m.compute()["fid"]


def evaluate_restoration(
    pipe: Any,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    task: str,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    *,
    classifier: Any = None,
    chroma: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    keep_outputs: bool = False,
    edit_tasks: tuple[str, ...] | None = None,
    exemplars: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Degrade held-out ``images`` for ``task``, restore them with ``pipe.edit`` and every classical baseline, and
    score each method against the originals.

    ``images``: floats in [-1, 1], (N, C, H, W); ``labels``: their classes or None. ``options``: the degradation's
    parameters (:data:`DEGRADATION_DEFAULTS`: ``fraction``, ``scale``, ``blur_sigma``, ``sigma``) and anything else
    for ``pipe.edit`` (sampler settings). ``pipe`` None scores the baselines only. ``classifier``: the reference net
    (``features_and_probs``, ``kind``); with labels it gives ``class_kept``, the share of restored images put in
    their original class, beside the same share for the originals (``class_kept_original``, the ceiling).
    ``reference`` (real training images): the FID of each restored set against it, beside the originals' FID
    (``fid_floor``). ``chroma``: the training images' mean colour offset, for the ``mean chroma`` colorize baseline.

    Returns ``methods`` (name -> psnr, ssim, hole_psnr for inpaint, seconds_per_image, class_kept, fid), the
    ``headline`` metric, the best baseline by it and GenLoop's margin over that baseline in dB. ``keep_outputs``
    adds ``outputs`` (name -> restored tensor, plus ``degraded``) for pictures; that key is not JSON.
    ``edit_tasks``: the ``pipe.edit`` tasks to score on the same observation (default: ``task`` itself, the row
    ``genloop``); another, e.g. ``inpaint-fast``, is the row ``genloop inpaint-fast``, each with its ``margin_db``.
    ``exemplars`` (training images): the ``nearest exemplar`` inpainting row, kind ``reference``: how far the known
    pixels pin the hole down, not a baseline of the bars (:func:`~.restoration_baselines.references`).
    """
    from . import restoration_baselines as baselines

    params, edit_options = degradation_params(task, options)
    if images.dim() != 4 or images.shape[0] < 2:
        raise DataError(f"restoration is scored on at least 2 images (N, C, H, W), got shape {tuple(images.shape)}")
    if labels is not None and labels.shape != (images.shape[0],):
        raise DataError(f"got {labels.numel()} labels for {images.shape[0]} images")
    originals = images.detach().float().cpu().clamp(-1, 1)
    degraded = degrade(originals, task, params, seed)
    reference_feats = None
    if classifier is not None and reference is not None:
        ref = reference.float() / 127.5 - 1 if reference.dtype == torch.uint8 else reference.float()
        reference_feats = classifier.features(ref)

    def score(x: torch.Tensor, seconds: float | None) -> dict[str, Any]:
        return _score(x, originals, degraded, labels, classifier, reference_feats, seconds)

    methods: dict[str, dict[str, Any]] = {}
    outputs: dict[str, torch.Tensor] = {}
    shown = degraded.as_image(originals.shape)
    if shown is not None:
        methods[INPUT] = {"kind": "input", **score(shown, None)}
        outputs[INPUT] = shown
    for name, fn in baselines.for_task(task, chroma).items():
        t0 = time.perf_counter()
        x = fn(degraded)
        methods[name] = {"kind": "baseline", **score(x, time.perf_counter() - t0)}
        outputs[name] = x
    for name, fn in baselines.references(task, exemplars).items():
        t0 = time.perf_counter()
        x = fn(degraded)
        methods[name] = {"kind": "reference", **score(x, time.perf_counter() - t0)}
        outputs[name] = x
    for edit_task in (edit_tasks or (task,)) if pipe is not None else ():
        name = GENLOOP if edit_task == task else f"{GENLOOP} {edit_task}"
        t0 = time.perf_counter()
        x = restore_with_pipe(pipe, degraded, seed, edit_options, edit_task)
        methods[name] = {"kind": "genloop", "edit_task": edit_task, **score(x, time.perf_counter() - t0)}
        outputs[name] = x

    key = headline(task)
    base = {k: v for k, v in methods.items() if v["kind"] == "baseline"}
    best = max(base, key=lambda k: base[k][key])
    result: dict[str, Any] = {
        "task": task,
        "n": int(originals.shape[0]),
        "image_size": int(originals.shape[-1]),
        "channels": int(originals.shape[1]),
        "seed": int(seed),
        "degradation": params,
        "edit_options": edit_options,
        "headline": key,
        "methods": methods,
        "best_baseline": best,
    }
    for row in methods.values():
        if row["kind"] == "genloop":
            row["margin_db"] = row[key] - base[best][key]
    if GENLOOP in methods:
        result["genloop_margin_db"] = methods[GENLOOP]["margin_db"]
    if classifier is not None:
        feats, probs = classifier.features_and_probs(originals)
        if labels is not None and getattr(classifier, "kind", None) == "classifier":
            result["class_kept_original"] = float((probs.argmax(1) == labels.cpu()).double().mean())
        if reference_feats is not None:
            result["fid_floor"] = _fid(reference_feats, feats)
            result["n_reference"] = int(reference_feats.shape[0])
        result["classifier"] = {"id": getattr(classifier, "id", None), "kind": getattr(classifier, "kind", None)}
    if keep_outputs:
        result["outputs"] = {**outputs, "original": originals, "degraded": degraded.observation}
    return result


def before_after_grid(result: dict[str, Any], path: str | Path, k: int = 8, upscale: int = 3) -> Path:
    """A PNG of ``k`` images (rows, evenly spread) of an :func:`evaluate_restoration` result made with
    ``keep_outputs=True``: degraded input | each baseline | GenLoop | original, a header naming each column.
    Pixels are repeated ``upscale`` times, or more for images under 27 px, so that a cell is >= 80 px wide."""
    from PIL import Image, ImageDraw, ImageFont

    outputs = result.get("outputs")
    if not outputs:
        raise DataError("the result holds no images: call evaluate_restoration(..., keep_outputs=True)")
    n = outputs["original"].shape[0]
    rows = torch.linspace(0, n - 1, min(k, n)).round().long()  # spread over the set, not its first images
    original = outputs["original"][rows]
    shown = outputs.get(INPUT)
    if shown is None:  # colorize: the grey observation, in every channel
        shown = outputs["degraded"].expand(-1, original.shape[1], -1, -1)
    columns = [("degraded", shown[rows])]
    kinds = {name: row["kind"] for name, row in result["methods"].items()}
    columns += [(name, outputs[name][rows]) for name, kind in kinds.items() if kind in ("baseline", "reference")]
    ours = [name for name, kind in kinds.items() if kind == "genloop"]
    columns += [(name.replace(GENLOOP, "GenLoop"), outputs[name][rows]) for name in ours]
    columns.append(("original", original))
    side = original.shape[-1]
    cell, pad, head = side * max(upscale, math.ceil(80 / side)), 4, 30  # >= 80 px: room for two header lines
    canvas = Image.new("RGB", (len(columns) * (cell + pad) + pad, head + original.shape[0] * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for c, (label, imgs) in enumerate(columns):
        x = pad + c * (cell + pad)
        first, _, second = label.partition(" ")  # "GenLoop inpaint-fast" on two lines
        draw.multiline_text((x, 2), f"{first[: cell // 6]}\n{second[: cell // 6]}", fill=(0, 0, 0), font=font)
        arr = to_unit(imgs).mul(255).round().byte().permute(0, 2, 3, 1).numpy()
        for r, a in enumerate(arr):
            img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).convert("RGB")
            canvas.paste(img.resize((cell, cell), Image.Resampling.NEAREST), (x, head + r * (cell + pad)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def held_out(dataset: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A seeded choice of ``n`` held-out (val + test) images of a prepared dataset, as floats in [-1, 1]."""
    from ..data.image import to_float

    parts = [dataset.get(s) for s in ("val", "test") if s in dataset.splits]
    images = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts]) if parts[0][1] is not None else None
    if images.shape[0] < 2:
        raise DataError(
            f"dataset {dataset.name!r} has {images.shape[0]} held-out (val+test) images; restoration needs 2"
        )
    pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return to_float(images[pick]), (labels[pick] if labels is not None else None)


def evaluate_restoration_on(
    dataset: Any,
    pipe: Any,
    task: str,
    n: int = 200,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    keep_outputs: bool = False,
    edit_tasks: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_restoration` on ``n`` held-out images of a prepared ``dataset`` with its reference net (class
    kept for labelled data; FID against ``n`` training images); the mean-chroma baseline's colour and the ``nearest
    exemplar`` row's candidates come from the training images. ``pipe`` None scores the baselines alone."""
    from .features import get_feature_extractor
    from .restoration_baselines import chroma_offset

    if n < 2:
        raise ConfigError(f"restoration is scored on at least 2 images, got n={n}")
    degradation_params(task, options)  # a bad task or option fails before the reference net is loaded
    if task == "colorize" and dataset.channels != 3:
        raise ConfigError(f"colorize needs RGB images; {dataset.name} has {dataset.channels} channel(s)")
    images, labels = held_out(dataset, n, seed)
    extractor = get_feature_extractor(dataset, device=device, progress=progress)
    train_x, _ = dataset.get("train")
    g = torch.Generator().manual_seed(seed + 1)
    reference = train_x[torch.randperm(train_x.shape[0], generator=g)[: images.shape[0]]]
    chroma = chroma_offset(train_x) if dataset.channels == 3 else None
    r = evaluate_restoration(
        pipe,
        images,
        labels,
        task,
        options,
        seed,
        classifier=extractor,
        chroma=chroma,
        reference=reference,
        keep_outputs=keep_outputs,
        edit_tasks=edit_tasks,
        exemplars=train_x,
    )
    r.update({"dataset": dataset.name, "held_out_split": "val+test", "reference_split": "train"})
    r["classifier"]["accuracy"] = float(extractor.accuracy)
    return r


def evaluate_restoration_run(
    run_id: str,
    task: str,
    n: int = 200,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    runs_dir: str | Path | None = None,
    device: str = "cpu",
    checkpoint: str = "last",
    progress: bool = False,
) -> dict[str, Any]:
    """``genloop eval RUN --task T``: :func:`evaluate_restoration_on` the run's data with its pipeline, written to
    ``eval/restoration_<task>.json`` with a before/after picture ``eval/restoration_<task>.png``."""
    from ..config import from_dict
    from ..data import DataConfig, load_dataset
    from ..generation.pipelines import load_pipeline
    from ..runs import RunStore
    from ..serialization import write_json

    degradation_params(task, options)  # a bad task or option fails before anything loads
    run = RunStore(runs_dir).get(run_id)
    pipe = load_pipeline(run.dir, device=device, checkpoint=checkpoint)
    # asked before the data and the reference net load: a GAN's pipeline may have an edit that only refuses
    if not getattr(getattr(pipe, "system", None), "diffusion", False) or not callable(getattr(pipe, "edit", None)):
        raise ConfigError(
            f"run {run.id} ({run.config['model']['name']}) cannot edit images: restoration needs a diffusion run (ddpm)"
        )
    dataset = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
    r = evaluate_restoration_on(dataset, pipe, task, n, options, seed, device, progress, keep_outputs=True)
    picture = before_after_grid(r, run.files.eval / f"restoration_{task}.png")
    r.pop("outputs")
    r.update({"run_id": run.id, "checkpoint": checkpoint, "picture": str(picture)})
    path = run.files.eval / f"restoration_{task}.json"
    write_json(path, r)
    return {**r, "path": str(path)}


__all__ = [
    "before_after_grid",
    "evaluate_restoration_on",
    "evaluate_restoration_run",
    "held_out",
    "GENLOOP",
    "INPUT",
    "evaluate_restoration",
    "headline",
    "restore_with_pipe",
    "DEGRADATION_DEFAULTS",
    "LUMA",
    "PSNR_CAP",
    "TASKS",
    "Degraded",
    "add_noise",
    "as_numpy_unit",
    "centre_mask",
    "degradation_params",
    "degrade",
    "downsample",
    "from_numpy_unit",
    "gaussian_blur",
    "gaussian_kernel",
    "psnr",
    "ssim",
    "to_grey",
    "to_unit",
]
