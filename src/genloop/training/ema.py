"""Exponential moving average of weights: the copy that generates, smoother than the live weights."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        # Warm-up: early on the average follows the weights closely instead of remembering the random init.
        decay = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow.parameters(), module.parameters()):
            s.lerp_(p.detach().to(s.dtype), 1 - decay)
        for sb, b in zip(self.shadow.buffers(), module.buffers()):
            sb.copy_(b)

    @contextlib.contextmanager
    def swapped_in(self, owner: nn.Module, name: str) -> Iterator[None]:
        """Temporarily make ``owner.<name>`` the averaged copy (to sample during training)."""
        live = getattr(owner, name)
        setattr(owner, name, self.shadow)
        try:
            yield
        finally:
            setattr(owner, name, live)
