"""Classical restorers, the yardstick a learned prior has to beat on the same degraded inputs.

Each is a plain function from the observation (GenLoop tensors in [-1, 1]) to restored images of the originals'
shape, with no learning and no tuning on the evaluated images: every setting below is fixed in advance. The two free
settings, Wiener's balance and the Gaussian's width, were each picked once from a short grid by PSNR on 100
*training* images of ``digits`` (16 px) and ``photos`` (32 px) at the default degradations (blur 1 px, noise 0.1):
balance 0.003 of {1e-4, 3e-4, 1e-3, 3e-3, 1e-2} was best on both; 0.5 px of {0.3, 0.5, 0.75, 1} best on digits and
within 0.4 dB of the best (0.75) on photos.

- inpaint: ``mean_fill`` (each channel's hole gets the mean of that image's known pixels) and ``biharmonic``
  (``skimage.restoration.inpaint_biharmonic``: the smooth surface whose biharmonic is zero in the hole).
- upscale: ``bicubic`` — ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)``, Keys' kernel
  with a = -0.75 (OpenCV's; PIL and MATLAB use -0.5), pixel centres aligned as block averaging puts them.
- deblur: ``wiener`` — ``skimage.restoration.wiener`` with the known Gaussian PSF, balance 0.003, on the image
  reflect-padded by the kernel radius (its FFT is circular; padding keeps the borders from wrapping).
- denoise: ``gaussian_smoothing`` (a 0.5 px Gaussian) and ``nl_means`` (``skimage.restoration.denoise_nl_means``,
  5 px patches within 6 px, h = 0.8 sigma with the known sigma (halved: scikit-image sees [0, 1] data), fast mode,
  as scikit-image's guide suggests).
- colorize: ``luminance`` (the grey image in every channel) and ``mean_chroma`` (the grey image plus the average
  colour offset R-Y, G-Y, B-Y of the training images, which leaves the luma unchanged).

:func:`for_task` lists the baselines of a task as callables on a :class:`~.restoration.Degraded`.

:func:`references` adds, for inpainting, one row that is not a baseline of the issue's bars but tells how far the known
pixels determine the hole at all: ``nearest exemplar`` fills the hole from the training image closest on the known
pixels (exemplar-based completion, as Hays & Efros 2007 did with millions of photos).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .restoration import LUMA, TASKS, Degraded, as_numpy_unit, from_numpy_unit, gaussian_blur, gaussian_kernel

GAUSSIAN_DENOISE_SIGMA = 0.5  # px, chosen on training images (module docstring)
WIENER_BALANCE = 0.003  # chosen on training images (module docstring)
NLM_PATCH, NLM_DISTANCE, NLM_H = 5, 6, 0.8  # h = NLM_H * sigma


def _check_mask(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.shape != (images.shape[0], 1, *images.shape[-2:]):
        want = (images.shape[0], 1, *images.shape[-2:])
        raise DataError(f"mask must be (N, 1, H, W) = {want}, got {tuple(mask.shape)}")
    m = mask > 0.5
    if bool(m.flatten(1).all(1).any()):
        raise DataError("a mask covers the whole image: no known pixels to fill from")
    return m


def mean_fill(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each hole pixel becomes the mean of the same image's known pixels in that channel."""
    m = _check_mask(images, mask).expand_as(images)
    known = (~m).float()
    mean = (images * known).flatten(2).sum(2) / known.flatten(2).sum(2)
    return torch.where(m, mean[:, :, None, None].expand_as(images), images)


def biharmonic(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """scikit-image's biharmonic inpainting of the hole (``mask`` 1 = unknown), image by image."""
    from skimage.restoration import inpaint_biharmonic

    m = _check_mask(images, mask)[:, 0].numpy()
    x = as_numpy_unit(images)
    out = np.stack([inpaint_biharmonic(img, hole, channel_axis=-1) for img, hole in zip(x, m)])
    return from_numpy_unit(out)


def bicubic(low: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upscaling by ``scale`` (torch, a = -0.75, align_corners=False), clamped to [-1, 1]."""
    if int(scale) != scale or scale < 2:
        raise ConfigError(f"scale must be a whole number >= 2, got {scale}")
    return F.interpolate(low.float(), scale_factor=int(scale), mode="bicubic", align_corners=False).clamp_(-1, 1)


def wiener(blurred: torch.Tensor, blur_sigma: float, balance: float = WIENER_BALANCE) -> torch.Tensor:
    """Wiener deconvolution with the known Gaussian PSF of ``blur_sigma`` px, per channel, reflect-padded."""
    from skimage.restoration import wiener as sk_wiener

    k = gaussian_kernel(blur_sigma).double().numpy()
    psf = np.outer(k, k)
    r = k.size // 2
    x = as_numpy_unit(blurred)
    if r >= min(x.shape[1:3]):
        raise ConfigError(f"blur_sigma {blur_sigma} is too wide for {x.shape[2]} px images (kernel radius {r})")
    padded = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    out = np.empty_like(x)
    for i, img in enumerate(padded):
        for c in range(img.shape[-1]):
            out[i, ..., c] = sk_wiener(img[..., c], psf, balance, clip=True)[r:-r, r:-r]
    return from_numpy_unit(out)


def gaussian_smoothing(noisy: torch.Tensor, sigma_px: float = GAUSSIAN_DENOISE_SIGMA) -> torch.Tensor:
    """A Gaussian low-pass of ``sigma_px`` pixels (reflected borders), clamped."""
    return gaussian_blur(noisy.float(), sigma_px).clamp_(-1, 1)


def nl_means(noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    """Non-local means with the known noise ``sigma`` ([-1, 1] units: sigma / 2 on scikit-image's [0, 1]), fast mode."""
    from skimage.restoration import denoise_nl_means

    if not sigma > 0:
        raise ConfigError(f"sigma must be > 0 (noise std in [-1, 1] pixel units), got {sigma}")
    x = as_numpy_unit(noisy, clip=False)
    sigma = sigma / 2
    out = np.stack(
        [
            denoise_nl_means(
                img,
                patch_size=NLM_PATCH,
                patch_distance=NLM_DISTANCE,
                h=NLM_H * sigma,
                sigma=sigma,
                fast_mode=True,
                channel_axis=-1,
            )
            for img in x
        ]
    )
    return from_numpy_unit(out.reshape(x.shape).clip(0, 1))  # a 1-channel image comes back without its axis


def luminance(grey: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """The grey image in every channel: no colour at all, the luma exact."""
    if grey.shape[1] != 1:
        raise DataError(f"a grey image has 1 channel, got {grey.shape[1]}")
    return grey.float().expand(-1, channels, -1, -1).clone()


def chroma_offset(images: torch.Tensor) -> torch.Tensor:
    """The mean colour offset (R-Y, G-Y, B-Y) of RGB ``images`` ([-1, 1] or uint8), as a (3,) float tensor on the
    [-1, 1] scale. Its luma is zero, so adding it to a grey image keeps that image's luma."""
    x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
    if x.dim() != 4 or x.shape[1] != 3:
        raise DataError(f"chroma needs RGB images (N, 3, H, W), got {tuple(x.shape)}")
    y = (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return (x - y).mean(dim=(0, 2, 3))


def mean_chroma(grey: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The grey image plus a fixed colour offset (:func:`chroma_offset` of the training images), clamped."""
    if offset.shape != (3,):
        raise DataError(f"a chroma offset is 3 numbers (R-Y, G-Y, B-Y), got shape {tuple(offset.shape)}")
    return (luminance(grey) + offset.view(1, 3, 1, 1)).clamp_(-1, 1)


def nearest_exemplar(images: torch.Tensor, mask: torch.Tensor, exemplars: torch.Tensor) -> torch.Tensor:
    """Fill each hole with the same pixels of the exemplar (a training image) closest on that image's known pixels."""
    m = _check_mask(images, mask)
    e = exemplars.float() / 127.5 - 1 if exemplars.dtype == torch.uint8 else exemplars.float()
    if e.dim() != 4 or e.shape[1:] != images.shape[1:] or e.shape[0] == 0:
        raise DataError(f"exemplars must be (M, {', '.join(map(str, images.shape[1:]))}), got {tuple(e.shape)}")
    known = (~m).expand_as(images).flatten(1).double()
    x, ef = images.flatten(1).double(), e.flatten(1).double()
    # sum over known pixels of (x - e)^2, for every pair, without materialising N x M x D
    dist = (known * x**2).sum(1, keepdim=True) - 2 * (known * x) @ ef.T + known @ (ef**2).T
    best = e[dist.argmin(1)]
    return torch.where(m.expand_as(images), best, images.float())


def references(task: str, exemplars: torch.Tensor | None) -> dict[str, Callable[[Degraded], torch.Tensor]]:
    """Rows beside the baselines that the bars do not count: ``nearest exemplar`` for inpaint, given exemplars."""
    if task == "inpaint" and exemplars is not None:
        return {"nearest exemplar": lambda d: nearest_exemplar(d.observation, d.mask, exemplars)}
    return {}


Baseline = Callable[[Degraded], torch.Tensor]


def for_task(task: str, chroma: torch.Tensor | None = None) -> dict[str, Baseline]:
    """The baselines of ``task``, by name, each a callable on the task's :class:`Degraded` observation.

    ``chroma`` (:func:`chroma_offset` of the training images) adds ``mean_chroma`` to colorize's baselines."""
    if task == "inpaint":
        return {
            "mean fill": lambda d: mean_fill(d.observation, d.mask),
            "biharmonic": lambda d: biharmonic(d.observation, d.mask),
        }
    if task == "upscale":
        return {"bicubic": lambda d: bicubic(d.observation, d.operator["scale"])}
    if task == "deblur":
        return {"wiener": lambda d: wiener(d.observation, d.operator["blur_sigma"])}
    if task == "denoise":
        return {
            "gaussian": lambda d: gaussian_smoothing(d.observation),
            "nl-means": lambda d: nl_means(d.observation, d.operator["sigma"]),
        }
    if task == "colorize":
        out: dict[str, Baseline] = {"luminance": lambda d: luminance(d.observation)}
        if chroma is not None:
            out["mean chroma"] = lambda d: mean_chroma(d.observation, chroma)
        return out
    raise ConfigError(f"unknown restoration task {task!r}; valid: {', '.join(TASKS)}")


__all__ = [
    "bicubic",
    "biharmonic",
    "chroma_offset",
    "for_task",
    "gaussian_smoothing",
    "luminance",
    "mean_chroma",
    "mean_fill",
    "nearest_exemplar",
    "references",
    "nl_means",
    "wiener",
]
