"""Linear inverse problems with a trained diffusion model as the prior: DDRM (Kawar et al., 2022).

Given a known degradation ``y = H x + σ_y·z`` (:mod:`.degradations`) and a DDPM trained on clean images,
DDRM samples a restoration ``x`` in ~20 model calls, without retraining. It works in the spectral space
of ``H = U Σ Vᵀ`` and in "variance-exploding" units, ``x_t / sqrt(ā_t) = x0 + σ_t·ε`` with
``σ_t = sqrt((1 − ā_t)/ā_t)``. At each step, from the model's clean estimate ``x̂0`` (``x̄0 = Vᵀ x̂0``,
``ȳ = Σ⁺ Uᵀ y``), every spectral coordinate ``i`` moves to the next noise level ``σ'`` as follows:

- unobserved (``s_i = 0``): a DDIM step, ``x̄0 + sqrt(1 − η²)·σ'·ε̄ + η·σ'·z``;
- observed, and the observation is noisier than ``σ'`` (``s_i σ' < σ_y``): pulled towards ``ȳ`` by
  ``x̄0 + sqrt(1 − η²)·σ'·(ȳ − x̄0)/(σ_y/s_i) + η·σ'·z``;
- observed, and ``σ'`` is the noisier (``s_i σ' >= σ_y``): ``η_b·ȳ + (1 − η_b)·x̄0`` plus the noise
  that is missing, ``sqrt(σ'² − η_b²·σ_y²/s_i²)·z``.

With ``σ_y = 0`` and ``η_b = 1`` the observed coordinates end exactly at ``ȳ``: the result satisfies
``H x = y`` up to the coordinates below ``min_singular`` and the final clamp to [-1, 1] (the schedule's
``clip_sample``), which can move a pixel whose unobserved detail pushed it out of range.

The noise schedule, the timesteps (trailing spacing) and the x0 estimate (ε- or v-prediction, clipped to
[-1, 1] as the run's schedule says) all come from the run's own scheduler, so any trained DDPM works.

The task functions at the bottom (:func:`upscale`, :func:`deblur`, :func:`denoise`, :func:`colorize`) take
tensors already in [-1, 1] and plain options; the editing front door wires them into its task registry.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...errors import ConfigError
from ...schedulers import randn
from ...schedulers.base import GeneratorArg
from .degradations import Downsample, GaussianBlur, Grey, Identity, LinearOperator, check_sigma

# Kawar et al.'s defaults: η = 0.85 for the unobserved and weakly observed coordinates, η_b = 1.
DEFAULT_STEPS = 20
DEFAULT_ETA = 0.85
DEFAULT_ETA_B = 1.0
# Spectral coordinates seen through a singular value below this fraction of the largest count as unobserved.
# Only blurs have such values (their s falls to ~1e-6): a "noiseless" y still carries float and 8-bit rounding,
# which 1/s would amplify into the image. Kawar et al.'s deblurring code zeroes s < 3e-2 the same way.
DEFAULT_MIN_SINGULAR = 3e-2


def _sigma_ve(abar: float) -> float:
    """``σ_t = sqrt((1 − ā)/ā)``: the noise level of ``x_t / sqrt(ā)`` (0 for the clean data)."""
    return math.sqrt((1 - abar) / abar)


def _check_unit(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{name} must be between 0 and 1, got {value!r}")
    return float(value)


def _check_diffusion(system: Any, task: str) -> None:
    if not getattr(system, "diffusion", False):
        name = getattr(getattr(system, "config", None), "name", type(system).__name__)
        raise ConfigError(f"{task} needs a diffusion model as its prior (train ddpm); model '{name}' is not one")


def _check_y(system: Any, y: torch.Tensor, operator: LinearOperator, generators: GeneratorArg) -> tuple[int, int, int]:
    """The model's image shape (C, S, S), after checking ``y`` is what ``operator`` makes of such images (one
    generator per image, when a list is given)."""
    spec = system.spec
    x_shape = (spec.channels, spec.image_size, spec.image_size)
    operator.check(x_shape)
    want = operator.output_shape(x_shape)
    if y.ndim != 4 or tuple(y.shape[1:]) != want:
        raise ConfigError(
            f"{operator!r} on this {'x'.join(map(str, x_shape))} model expects inputs of shape (N, "
            f"{', '.join(map(str, want))}); got {tuple(y.shape)}"
        )
    if not isinstance(generators, torch.Generator | None) and len(list(generators)) != y.shape[0]:
        raise ConfigError(f"got {len(list(generators))} generators for {y.shape[0]} images")
    return x_shape


@torch.no_grad()
def ddrm(
    system: Any,
    generators: GeneratorArg,
    y: torch.Tensor,
    operator: LinearOperator,
    sigma_y: float,
    steps: int = DEFAULT_STEPS,
    eta: float = DEFAULT_ETA,
    eta_b: float = DEFAULT_ETA_B,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
    min_singular: float = DEFAULT_MIN_SINGULAR,
) -> torch.Tensor:
    """Restore ``x`` (B, C, S, S), clamped to [-1, 1], from ``y = operator.H(x) + sigma_y·z`` in ``steps`` model calls.

    ``generators``: one ``torch.Generator`` per image (image i's noise then depends on nothing else, so a
    seed gives the same image alone or in a batch), one for the whole batch, or None (torch's global RNG).
    ``sigma_y`` is the known noise level of ``y`` in [-1, 1] pixel units. ``labels``/``guidance``: the class
    to steer towards with classifier-free guidance (conditional models only), as in generation.
    """
    _check_diffusion(system, "restoration")
    sigma_y = check_sigma("sigma_y", sigma_y)
    eta, eta_b = _check_unit("eta", eta), _check_unit("eta_b", eta_b)
    if not 0 <= min_singular < 1:
        raise ConfigError(f"min_singular must be in [0, 1), got {min_singular}")
    x_shape = _check_y(system, y, operator, generators)
    device = next(system.parameters()).device
    y = y.to(device, torch.float32)
    scheduler = system.make_scheduler("ddim")  # any sampler: only its timesteps and x0 estimate are used
    scheduler.set_timesteps(steps)

    s = operator.singulars(x_shape).to(device, torch.float32)
    observed = s > min_singular * float(s.max())
    s_safe = torch.where(observed, s, torch.ones_like(s))
    uty = operator.ut(y)
    ybar = torch.where(observed, uty / s_safe, torch.zeros_like(uty))
    noise_of_y = sigma_y / s_safe  # σ_y / s_i: how noisy ȳ is, coordinate by coordinate

    def noise() -> torch.Tensor:
        return randn(uty.shape, generators, device, torch.float32)

    # x_T given y (Kawar et al., eq. 9): coordinates seen better than σ_T start at ȳ plus the missing noise.
    t0 = int(scheduler.timesteps[0])
    sig = _sigma_ve(scheduler.alpha_bar(t0))
    seen = observed & (s * sig > sigma_y)
    z = noise()
    xbar = torch.where(seen, ybar + (sig**2 - noise_of_y**2).clamp_min(0).sqrt() * z, sig * z)
    x = math.sqrt(scheduler.alpha_bar(t0)) * operator.v(xbar)

    keep = math.sqrt(1 - eta**2)
    for t in scheduler.timesteps.tolist():
        prev = scheduler.previous_timestep(t)
        out = system.predict(x, t, None if labels is None else labels.to(device), guidance)
        x0 = scheduler.predict_x0(out, t, x)
        eps = scheduler.predict_epsilon(x0, t, x)  # the noise consistent with the (clipped) x0
        sig = _sigma_ve(scheduler.alpha_bar(prev))
        x0bar, epsbar, z = operator.vt(x0), operator.vt(eps), noise()
        unobserved = x0bar + keep * sig * epsbar + eta * sig * z
        before = eta_b * ybar + (1 - eta_b) * x0bar + (sig**2 - (eta_b * noise_of_y) ** 2).clamp_min(0).sqrt() * z
        if sigma_y > 0:
            after = x0bar + keep * sig * (uty - s * x0bar) / sigma_y + eta * sig * z
            observed_next = torch.where(s * sig >= sigma_y, before, after)
        else:
            observed_next = before
        xbar = torch.where(observed, observed_next, unobserved)
        x = math.sqrt(scheduler.alpha_bar(prev)) * operator.v(xbar)
    clip = scheduler.config.clip_sample  # pixel models: 1.0, GenLoop's [-1, 1]; None for unbounded data
    return x if clip is None else x.clamp(-clip, clip)


DEFAULT_DPS_STEPS = 100
DEFAULT_ZETA = 1.0


def dps(
    system: Any,
    generators: GeneratorArg,
    y: torch.Tensor,
    operator: LinearOperator,
    steps: int = DEFAULT_DPS_STEPS,
    zeta: float = DEFAULT_ZETA,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Diffusion posterior sampling (Chung et al., 2023): the alternative to :func:`ddrm` that needs only ``H``.

    Each step is the DDPM ancestral step, followed by a gradient step on the data misfit of the model's
    clean estimate, ``x ← x − ζ/‖y − H x̂0(x_t)‖ · ∇_{x_t} ‖y − H x̂0(x_t)‖`` per image. The gradient goes
    through the network (about 3x the cost of a DDRM step), it does not know ``σ_y``, and it wants many
    steps (the paper uses 1000), so DDRM is the default; DPS is here for operators without a usable SVD
    and as a reference. ``y`` and the generators are as in :func:`ddrm`.
    """
    _check_diffusion(system, "restoration")
    if isinstance(zeta, bool) or not isinstance(zeta, int | float) or not 0 <= zeta < math.inf:
        raise ConfigError(f"zeta (the DPS step size) must be a finite number >= 0, got {zeta!r}")
    x_shape = _check_y(system, y, operator, generators)
    device = next(system.parameters()).device
    y = y.to(device, torch.float32)
    scheduler = system.make_scheduler("ddpm")
    scheduler.set_timesteps(steps)
    x = randn((y.shape[0], *x_shape), generators, device, torch.float32)
    for t in scheduler.timesteps.tolist():
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            out = system.predict(x_in, t, None if labels is None else labels.to(device), guidance)
            misfit = (y - operator.H(scheduler.predict_x0(out, t, x_in))).flatten(1).norm(dim=1)
            (grad,) = torch.autograd.grad(misfit.sum(), x_in)  # images do not interact: per-image gradients
        step = zeta / misfit.detach().clamp_min(1e-12)
        x = scheduler.step(out.detach(), t, x, generator=generators) - step.view(-1, 1, 1, 1) * grad
    clip = scheduler.config.clip_sample
    return x.detach() if clip is None else x.detach().clamp(-clip, clip)


# --- tasks: plain functions over tensors, for the editing front door's registry ------------------------------


def _check_input(system: Any, image: torch.Tensor, channels: int, size: int, task: str) -> None:
    if image.ndim != 4 or tuple(image.shape[1:]) != (channels, size, size):
        raise ConfigError(
            f"{task} expects images of shape (N, {channels}, {size}, {size}) for this model; got {tuple(image.shape)}"
        )


def upscale(
    system: Any,
    low: torch.Tensor,
    *,
    scale: int = 2,
    noise: float = 0.0,
    generators: GeneratorArg = None,
    steps: int = DEFAULT_STEPS,
    eta: float = DEFAULT_ETA,
    eta_b: float = DEFAULT_ETA_B,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Super-resolution: ``low`` (N, C, S/scale, S/scale) in [-1, 1] -> (N, C, S, S) at the model's size S.

    The degradation assumed is block averaging by ``scale`` (:class:`Downsample`) plus noise of standard
    deviation ``noise`` ([-1, 1] pixel units; 0 for a clean low-resolution image).
    """
    _check_diffusion(system, "upscale")
    op = Downsample(scale)
    size = system.spec.image_size
    if size % scale:
        raise ConfigError(f"upscale by {scale} needs the model's image size ({size}) to be divisible by {scale}")
    _check_input(system, low, system.spec.channels, size // scale, f"upscale by {scale}")
    return ddrm(system, generators, low, op, noise, steps, eta, eta_b, labels, guidance)


def deblur(
    system: Any,
    image: torch.Tensor,
    *,
    blur_sigma: float = 1.0,
    noise: float = 0.0,
    generators: GeneratorArg = None,
    steps: int = DEFAULT_STEPS,
    eta: float = DEFAULT_ETA,
    eta_b: float = DEFAULT_ETA_B,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Deblurring: ``image`` (N, C, S, S) blurred by a Gaussian of ``blur_sigma`` pixels (:class:`GaussianBlur`,
    reflected borders), with noise of standard deviation ``noise`` in [-1, 1] units -> the sharp image."""
    _check_diffusion(system, "deblur")
    op = GaussianBlur(blur_sigma)
    _check_input(system, image, system.spec.channels, system.spec.image_size, "deblur")
    return ddrm(system, generators, image, op, noise, steps, eta, eta_b, labels, guidance)


def denoise(
    system: Any,
    image: torch.Tensor,
    *,
    sigma: float = 0.1,
    generators: GeneratorArg = None,
    steps: int = DEFAULT_STEPS,
    eta: float = DEFAULT_ETA,
    eta_b: float = DEFAULT_ETA_B,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Denoising: ``image`` (N, C, S, S) = clean + Gaussian noise of standard deviation ``sigma``.

    ``sigma`` is in [-1, 1] pixel units (the range GenLoop's images live in): ``sigma = 0.1`` is a standard
    deviation of 0.1 × 127.5 ≈ 12.75 grey levels of 0..255.
    """
    _check_diffusion(system, "denoise")
    sigma = check_sigma("denoise sigma (noise std in [-1, 1] pixel units)", sigma, positive=True)
    _check_input(system, image, system.spec.channels, system.spec.image_size, "denoise")
    return ddrm(system, generators, image, Identity(), sigma, steps, eta, eta_b, labels, guidance)


def colorize(
    system: Any,
    image: torch.Tensor,
    *,
    noise: float = 0.0,
    generators: GeneratorArg = None,
    steps: int = DEFAULT_STEPS,
    eta: float = DEFAULT_ETA,
    eta_b: float = DEFAULT_ETA_B,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Colourisation: a grey ``image`` (N, 1, S, S) in [-1, 1] -> (N, 3, S, S) whose luminance is the input.

    An RGB input (N, 3, S, S) is reduced to its BT.601 luminance (:class:`Grey`) first: only that is kept.
    """
    _check_diffusion(system, "colorize")
    if system.spec.channels != 3:
        raise ConfigError(f"colorize needs an RGB model; this model makes {system.spec.channels}-channel images")
    op = Grey()
    size = system.spec.image_size
    if image.ndim == 4 and image.shape[1] == 3:
        image = op.H(image)
    _check_input(system, image, 1, size, "colorize")
    return ddrm(system, generators, image, op, noise, steps, eta, eta_b, labels, guidance)
