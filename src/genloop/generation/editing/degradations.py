"""Known linear degradations ``y = H x + σ_y·z`` and their singular value decompositions.

Restoration with a diffusion prior (:mod:`genloop.generation.editing.inverse`, DDRM) needs more than
``H`` itself: it works in the spectral space of ``H = U Σ Vᵀ``, where every coordinate of ``Vᵀ x`` is
either observed through one singular value or not observed at all. Each operator here gives that
decomposition in a closed, cheap form instead of a dense n×n matrix:

============================  ===========================================  =============================
operator                      ``H``                                        SVD
============================  ===========================================  =============================
:class:`Identity`             ``x`` (denoising)                            ``U = V = I``, ``s = 1``
:class:`Mask`                 ``x`` where the mask is known, 0 elsewhere   ``U = V = I``, ``s ∈ {0, 1}``
:class:`Downsample` (r)       the mean of each r×r block                   one r²×r² rotation per block
:class:`GaussianBlur` (σ)     separable blur, reflected at the borders     the 1-D blur matrix's SVD, twice
:class:`Grey`                 luminance ``0.299 R + 0.587 G + 0.114 B``    one 3×3 rotation per pixel
============================  ===========================================  =============================

Shapes. ``x`` is ``(B, C, H, W)``. ``H(x)`` has the operator's output shape (:meth:`LinearOperator.output_shape`).
The spectral coordinates ``vt(x)`` are a tensor with the same number of elements as ``x``, in whatever
layout the operator finds natural (e.g. ``(B, C, H/r, W/r, r²)`` for block averaging), and
``singulars(x_shape)`` has that layout without the batch dimension, 0 where a coordinate is not observed.
``ut(y)`` places ``Uᵀ y`` into the observed coordinates of that layout (0 elsewhere) and ``u`` reads
them back, so that for every operator ``H(x) == u(singulars · vt(x))`` and ``v(vt(x)) == x``.

Pixels are floats in [-1, 1]; noise levels (``σ_y``) are in the same units.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ...schedulers import randn
from ...schedulers.base import GeneratorArg

Shape = tuple[int, ...]


class LinearOperator:
    """The shared interface: ``H``, its pseudo-inverse, and its SVD in spectral form (see the module doc)."""

    name: str = "linear"

    def check(self, x_shape: Shape) -> None:
        """Raise one clear line if the operator cannot act on images of shape ``(C, H, W)``."""

    def output_shape(self, x_shape: Shape) -> Shape:
        """The shape of ``H(x)`` (without the batch dimension) for ``x`` of shape ``(C, H, W)``."""
        return tuple(x_shape)

    def H(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 - the operator's standard name
        raise NotImplementedError

    def H_pinv(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """The Moore-Penrose pseudo-inverse: the smallest ``x`` with ``H x`` closest to ``y``."""
        raise NotImplementedError

    def vt(self, x: torch.Tensor) -> torch.Tensor:
        """``Vᵀ x``: an image into spectral coordinates (an orthogonal change of basis)."""
        raise NotImplementedError

    def v(self, z: torch.Tensor) -> torch.Tensor:
        """``V z``: spectral coordinates back to an image."""
        raise NotImplementedError

    def ut(self, y: torch.Tensor) -> torch.Tensor:
        """``Uᵀ y`` in the observed spectral coordinates, 0 in the others."""
        raise NotImplementedError

    def u(self, z: torch.Tensor) -> torch.Tensor:
        """``U`` applied to the observed spectral coordinates of ``z`` (the others are ignored)."""
        raise NotImplementedError

    def singulars(self, x_shape: Shape) -> torch.Tensor:
        """The singular values in the spectral layout (float64, CPU), 0 for unobserved coordinates."""
        raise NotImplementedError

    def degrade(self, x: torch.Tensor, noise_sigma: float = 0.0, generator: GeneratorArg = None) -> torch.Tensor:
        """A test input: ``H(x) + noise_sigma · z``, ``z`` standard normal (one generator per image or one for all)."""
        noise_sigma = check_sigma("noise_sigma", noise_sigma)
        self.check(tuple(x.shape[1:]))
        y = self.H(x)
        if noise_sigma > 0:
            y = y + noise_sigma * randn(y.shape, generator, y.device, y.dtype)
        return y

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_sigma(name: str, value: float, positive: bool = False) -> float:
    """A finite noise or blur level ``>= 0`` (``> 0`` when ``positive``), or one clear line."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value}")
    return float(value)


def _rotation_with_first_row(w: torch.Tensor) -> torch.Tensor:
    """An orthogonal k×k matrix (float64) whose first row is ``w / |w|``: the ``Vᵀ`` of the 1×k matrix ``wᵀ``."""
    k = w.numel()
    basis = torch.eye(k, dtype=torch.float64)
    basis[:, 0] = w.to(torch.float64)
    q, _ = torch.linalg.qr(basis)
    if q[:, 0] @ w.to(torch.float64) < 0:  # QR fixes each column only up to sign
        q = -q
    return q.T.contiguous()


def _check_image_shape(x_shape: Shape) -> None:
    if len(x_shape) != 3:
        raise ConfigError(f"degradations act on images (C, H, W); got a tensor of shape {tuple(x_shape)}")


class Identity(LinearOperator):
    """``H = I``: pure denoising, every coordinate observed with singular value 1."""

    name = "identity"

    def check(self, x_shape: Shape) -> None:
        _check_image_shape(x_shape)

    def H(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return x

    def H_pinv(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return y

    def vt(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def v(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def ut(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def u(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def singulars(self, x_shape: Shape) -> torch.Tensor:
        return torch.ones(tuple(x_shape), dtype=torch.float64)


class Mask(LinearOperator):
    """Inpainting as a linear problem: ``H x`` keeps the known pixels and zeroes the rest.

    ``known`` is ``(H, W)``, ``(1, H, W)`` or ``(C, H, W)``, true (or 1) where the pixel is KNOWN. (A mask
    file in the editing front door is the opposite, white = fill; invert it before building this.)
    ``y`` has the image's full shape; its values in the hole are ignored.
    """

    name = "mask"

    def __init__(self, known: torch.Tensor) -> None:
        known = torch.as_tensor(known)
        if known.ndim == 2:
            known = known[None]
        if known.ndim != 3:
            raise ConfigError(f"a mask must be (H, W), (1, H, W) or (C, H, W); got shape {tuple(known.shape)}")
        if known.dtype != torch.bool and not bool(((known == 0) | (known == 1)).all()):
            raise ConfigError("a mask must hold only 0 and 1 (or booleans)")
        self.known = known.bool()

    def check(self, x_shape: Shape) -> None:
        _check_image_shape(x_shape)
        c, h, w = self.known.shape
        if (h, w) != tuple(x_shape[1:]) or c not in (1, x_shape[0]):
            raise ConfigError(
                f"the mask is {c}x{h}x{w} but the images are {x_shape[0]}x{x_shape[1]}x{x_shape[2]} (C x H x W)"
            )

    def _m(self, like: torch.Tensor) -> torch.Tensor:
        return self.known.to(like.device, like.dtype)

    def H(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return x * self._m(x)

    def H_pinv(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return y * self._m(y)

    def vt(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def v(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def ut(self, y: torch.Tensor) -> torch.Tensor:
        return y * self._m(y)

    def u(self, z: torch.Tensor) -> torch.Tensor:
        return z * self._m(z)

    def singulars(self, x_shape: Shape) -> torch.Tensor:
        self.check(x_shape)
        return self.known.to(torch.float64).expand(tuple(x_shape)).clone()


class Downsample(LinearOperator):
    """Block averaging by an integer ``scale``: each output pixel is the mean of an r×r block.

    Per block, ``H`` is the 1×r² row ``(1/r², …, 1/r²)``: one singular value ``1/r`` (left vector 1, right
    vector the constant block), and r² − 1 unobserved directions that complete the rotation.
    Spectral layout: ``(B, C, H/r, W/r, r²)``, coordinate 0 of each block the observed one.
    """

    name = "downsample"

    def __init__(self, scale: int) -> None:
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
            raise ConfigError(f"the downsampling scale must be an integer >= 2, got {scale!r}")
        self.scale = scale
        self._vt = _rotation_with_first_row(torch.ones(scale * scale, dtype=torch.float64))

    def __repr__(self) -> str:
        return f"Downsample(scale={self.scale})"

    def check(self, x_shape: Shape) -> None:
        _check_image_shape(x_shape)
        h, w = x_shape[1:]
        if h % self.scale or w % self.scale:
            raise ConfigError(f"downsampling by {self.scale} needs an image size divisible by it; got {h}x{w}")

    def output_shape(self, x_shape: Shape) -> Shape:
        self.check(x_shape)
        return (x_shape[0], x_shape[1] // self.scale, x_shape[2] // self.scale)

    def H(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        self.check(tuple(x.shape[1:]))
        return F.avg_pool2d(x, self.scale)

    def H_pinv(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        # H Hᵀ = I / r², so H⁺ = r² Hᵀ: every pixel of a block gets the block's value (nearest upsampling).
        return y.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        r = self.scale
        return x.reshape(b, c, h // r, r, w // r, r).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // r, w // r, r * r)

    def vt(self, x: torch.Tensor) -> torch.Tensor:
        self.check(tuple(x.shape[1:]))
        return self._blocks(x) @ self._vt.to(x.device, x.dtype).T

    def v(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w, _ = z.shape
        r = self.scale
        blocks = z @ self._vt.to(z.device, z.dtype)
        return blocks.reshape(b, c, h, w, r, r).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h * r, w * r)

    def ut(self, y: torch.Tensor) -> torch.Tensor:
        pad = y.new_zeros(*y.shape, self.scale * self.scale - 1)
        return torch.cat([y[..., None], pad], dim=-1)

    def u(self, z: torch.Tensor) -> torch.Tensor:
        return z[..., 0]

    def singulars(self, x_shape: Shape) -> torch.Tensor:
        c, h, w = self.output_shape(x_shape)
        s = torch.zeros(c, h, w, self.scale * self.scale, dtype=torch.float64)
        s[..., 0] = 1.0 / self.scale
        return s


@lru_cache(maxsize=32)
def _blur_svd(n: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The n×n 1-D Gaussian blur matrix (reflected borders) and its SVD ``A = U diag(s) Vᵀ``, in float64."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    a = torch.zeros(n, n, dtype=torch.float64)
    period = 2 * (n - 1)
    for i in range(n):
        for k, d in enumerate(range(-radius, radius + 1)):
            j = (i + d) % period if period else 0
            j = period - j if j >= n else j  # reflect without repeating the edge pixel (torch's "reflect")
            a[i, j] += kernel[k]
    u, s, vh = torch.linalg.svd(a)
    return a, u, s, vh


class GaussianBlur(LinearOperator):
    """A separable Gaussian blur of standard deviation ``sigma`` pixels, kernel radius ⌈3σ⌉, reflected borders.

    The 2-D blur is ``A_H x A_Wᵀ`` per channel with the 1-D blur matrices ``A``; with ``A = U diag(s) Vᵀ``
    the 2-D operator's SVD is the Kronecker product of the two 1-D ones: singular values ``s_i · s_j``.
    Every coordinate is observed, but many only faintly (``s`` falls to ~1e-6): the pseudo-inverse treats
    singular values below ``rcond`` times the largest as 0, as numpy's ``pinv`` does.
    """

    name = "blur"

    def __init__(self, sigma: float, rcond: float = 1e-5) -> None:
        self.sigma = check_sigma("blur_sigma", sigma, positive=True)
        self.rcond = float(rcond)

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma})"

    def check(self, x_shape: Shape) -> None:
        _check_image_shape(x_shape)
        if min(x_shape[1:]) < 2:
            raise ConfigError(f"blurring needs images of at least 2x2 pixels, got {x_shape[1]}x{x_shape[2]}")

    def _mats(self, n: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(m.to(like.device, like.dtype) for m in _blur_svd(n, self.sigma))

    def matrix(self, n: int) -> torch.Tensor:
        """The n×n 1-D blur matrix (float64): row i holds the weights of output pixel i."""
        return _blur_svd(n, self.sigma)[0].clone()

    def _sandwich(self, x: torch.Tensor, which: int, transpose: bool) -> torch.Tensor:
        mh = self._mats(x.shape[-2], x)[which]
        mw = self._mats(x.shape[-1], x)[which]
        if transpose:
            mh, mw = mh.T, mw.T
        return mh @ x @ mw.T

    def H(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        self.check(tuple(x.shape[1:]))
        return self._sandwich(x, 0, False)

    def vt(self, x: torch.Tensor) -> torch.Tensor:
        return self._sandwich(x, 3, False)

    def v(self, z: torch.Tensor) -> torch.Tensor:
        return self._sandwich(z, 3, True)

    def ut(self, y: torch.Tensor) -> torch.Tensor:
        return self._sandwich(y, 1, True)

    def u(self, z: torch.Tensor) -> torch.Tensor:
        return self._sandwich(z, 1, False)

    def singulars(self, x_shape: Shape) -> torch.Tensor:
        self.check(x_shape)
        c, h, w = x_shape
        s = _blur_svd(h, self.sigma)[2][:, None] * _blur_svd(w, self.sigma)[2][None, :]
        return s.expand(c, h, w).clone()

    def H_pinv(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        s = self.singulars(tuple(y.shape[1:]))
        keep = s > self.rcond * s.max()
        inv = torch.where(keep, 1 / s.clamp_min(1e-300), torch.zeros_like(s)).to(y.device, y.dtype)
        return self.v(self.ut(y) * inv)


# ITU-R BT.601 luma weights; they sum to 1, so a grey value stays in [-1, 1].
LUMA = (0.299, 0.587, 0.114)


class Grey(LinearOperator):
    """RGB to luminance: ``y = 0.299 R + 0.587 G + 0.114 B`` per pixel, ``y`` of shape ``(B, 1, H, W)``.

    Per pixel ``H`` is the fixed 1×3 row ``w``: one singular value ``|w|`` along ``w/|w|``, two unobserved
    colour directions. Spectral layout ``(B, 3, H, W)``, channel 0 the observed one.
    """

    name = "grey"

    def __init__(self) -> None:
        self.w = torch.tensor(LUMA, dtype=torch.float64)
        self._vt = _rotation_with_first_row(self.w)

    def check(self, x_shape: Shape) -> None:
        _check_image_shape(x_shape)
        if x_shape[0] != 3:
            raise ConfigError(f"colourisation needs RGB images (3 channels); these have {x_shape[0]}")

    def output_shape(self, x_shape: Shape) -> Shape:
        self.check(x_shape)
        return (1, x_shape[1], x_shape[2])

    def H(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        self.check(tuple(x.shape[1:]))
        return torch.einsum("c,bchw->bhw", self.w.to(x.device, x.dtype), x)[:, None]

    def H_pinv(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        w = self.w.to(y.device, y.dtype)
        return (w / (w @ w))[None, :, None, None] * y

    def vt(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("dc,bchw->bdhw", self._vt.to(x.device, x.dtype), x)

    def v(self, z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("dc,bdhw->bchw", self._vt.to(z.device, z.dtype), z)

    def ut(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([y, y.new_zeros(y.shape[0], 2, *y.shape[2:])], dim=1)

    def u(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, :1]

    def singulars(self, x_shape: Shape) -> torch.Tensor:
        self.check(x_shape)
        s = torch.zeros(tuple(x_shape), dtype=torch.float64)
        s[0] = float(self.w.norm())
        return s
