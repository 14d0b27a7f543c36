"""Differentiable augmentation for GANs on small data sets (DiffAugment and ADA).

With a few hundred images a discriminator memorises the training set within minutes: it scores every
real image high and everything else low, its gradients stop telling the generator anything, and the
samples collapse. Two papers of 2020 fixed this the same way — show the discriminator *augmented*
images only, real and generated alike, with augmentations the generator's gradient can flow through:

* DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training"): colour,
  translation and cutout, applied to every image the discriminator sees, in both players' steps.
* ADA (Karras et al., "Training Generative Adversarial Networks with Limited Data"): the same idea with a
  probability ``p`` per augmentation, adapted during training from an overfitting signal
  ``r_t = E[sign D(real)]``: r_t near 1 means the discriminator is sure of every real image (overfitting:
  raise p), near 0 means it cannot tell (lower p). ``p`` moves by at most 1 per ``ada_kimg`` thousand
  real images, so it adapts over the run, not per batch.

Because the same augmentations hit the fakes, the generator is not pushed to draw augmented images
(every op here can be undone in distribution: "non-leaking" at p < 1 in ADA's sense, and DiffAugment's
policies at p = 1 were shown not to leak in practice). Every op is made of differentiable tensor
arithmetic and gathers, so the generator's gradient passes through.

Random draws go through :mod:`genloop.distributed`: one training process and N data-parallel ones draw
the same augmentation for the same image, and a resumed run draws what the uninterrupted one did.
``p``, the r_t accumulators and the step counter are buffers, so checkpoints carry them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..errors import ConfigError


def _brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (distributed.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def _saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (distributed.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean


def _contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (distributed.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5), one draw each per image.

    Saturation mixes the channels of a colour image; on a one-channel image it is the identity.
    """
    return _contrast(_saturation(_brightness(x)))


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size in x and y (whole pixels), filling with zeros (grey)."""
    n, _, h, w = x.shape
    sh, sw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    dy = (distributed.rand(n, device=x.device) * (2 * sh + 1)).long().clamp_(max=2 * sh) - sh
    dx = (distributed.rand(n, device=x.device) * (2 * sw + 1)).long().clamp_(max=2 * sw) - sw
    rows = torch.arange(h, device=x.device)[None, :] + dy[:, None] + 1  # +1: index into the 1-px zero border
    cols = torch.arange(w, device=x.device)[None, :] + dx[:, None] + 1
    rows, cols = rows.clamp(0, h + 1), cols.clamp(0, w + 1)  # past the border: the zero border again
    padded = F.pad(x, (1, 1, 1, 1))
    c = x.shape[1]
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero (grey) one square of ``ratio`` times the image's size per image, at a random place."""
    n, _, h, w = x.shape
    ch, cw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    cy = (distributed.rand(n, device=x.device) * (h + (1 - ch % 2))).long()  # the square's centre
    cx = (distributed.rand(n, device=x.device) * (w + (1 - cw % 2))).long()
    ys = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - ch // 2)
    xs = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - cw // 2)
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]  # (n, h, w)
    return x * (~inside)[:, None].to(x.dtype)


POLICIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
}


def parse_policy(text: str) -> list[str]:
    """``"color,translation"`` -> ``["color", "translation"]``; an unknown name is a ConfigError."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in POLICIES]
    if unknown:
        raise ConfigError(f"model.augment: unknown policy {unknown[0]!r}; valid: {', '.join(POLICIES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"model.augment names a policy twice: {text!r}")
    return names


class DiffAugment(nn.Module):
    """Applies the policies, each to each image with probability ``p``; adapts ``p`` when ``adaptive``.

    With no policies it is the identity (and costs nothing), so every GAN can call it unconditionally.
    """

    def __init__(
        self,
        policy: str = "",
        p: float = 1.0,
        adaptive: bool = False,
        target: float = 0.6,
        interval: int = 4,
        kimg: float = 20.0,
    ) -> None:
        super().__init__()
        self.policies = parse_policy(policy)
        if not 0 <= p <= 1:
            raise ConfigError(f"model.augment_p must be in [0, 1], got {p}")
        if adaptive and not self.policies:
            raise ConfigError("model.ada adapts the augmentation probability: name policies in model.augment too")
        if not 0 < target < 1:
            raise ConfigError(f"model.ada_target must be in (0, 1), got {target}")
        if interval < 1:
            raise ConfigError(f"model.ada_interval must be >= 1, got {interval}")
        if kimg <= 0:
            raise ConfigError(f"model.ada_kimg must be > 0, got {kimg}")
        self.adaptive, self.target, self.interval, self.kimg = adaptive, target, interval, kimg
        if not self.policies:  # the identity holds no state: checkpoints of GANs without augmentation keep their keys
            return
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float64))
        # r_t accumulators since the last adjustment: the sum of sign(D(real)), how many images, and steps.
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("r_t", torch.zeros((), dtype=torch.float64))  # the last adjustment's signal

    @property
    def active(self) -> bool:
        return bool(self.policies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.policies:
            return x
        p = float(self.p)
        for name in self.policies:
            if p <= 0:
                break
            out = POLICIES[name](x)
            if p < 1:  # each image gets this op with probability p (drawn for every image on every rank)
                apply = distributed.rand(x.shape[0], device=x.device) < p
                out = torch.where(apply[:, None, None, None], out, x)
            x = out
        return x

    @torch.no_grad()
    def observe(self, d_real: torch.Tensor) -> None:
        """Record the discriminator's raw scores on (augmented) real images: the material of r_t."""
        if self.adaptive:
            self.sign_sum += torch.sign(d_real.detach().double()).sum()
            self.count += d_real.numel()

    @torch.no_grad()
    def end_step(self) -> dict[str, float]:
        """Once per training step: every ``interval`` steps, move ``p`` towards keeping r_t at the target.

        Returns what to log (``ada_p``, ``ada_r_t``); nothing when not adaptive. The sums are averaged over
        data-parallel ranks first, so every rank takes the same step.
        """
        if not self.adaptive:
            return {}
        self.steps += 1
        if int(self.steps) % self.interval == 0 and float(self.count) > 0:
            world = distributed.world_size()
            means = distributed.mean_over_ranks({"sign": float(self.sign_sum), "count": float(self.count)})
            r_t = means["sign"] / means["count"]
            images = means["count"] * world
            step = (1.0 if r_t > self.target else -1.0) * images / (self.kimg * 1000)
            self.p.copy_(torch.clamp(self.p + step, 0.0, 1.0))
            self.r_t.fill_(r_t)
            self.sign_sum.zero_()
            self.count.zero_()
        return {"ada_p": float(self.p), "ada_r_t": float(self.r_t)}
