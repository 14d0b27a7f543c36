"""The resumable, seeded stream of (x, y) token blocks a language model trains on."""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ConfigError, DataError

# -------------------------------------------------------------------------------------------- batches


class TokenBatches:
    """Endless seeded random windows, nanoGPT's get_batch: ``x = data[i:i+T]``, ``y = data[i+1:i+T+1]``.

    The offsets of batch ``n`` come from a generator seeded with ``(seed, n)``, so a batch depends on
    nothing but its number: ``state_dict()`` is ``{"step": n}`` and a resumed stream continues exactly.
    """

    def __init__(
        self, data: np.ndarray, batch_size: int, block_size: int, seed: int = 0, device: torch.device | str = "cpu"
    ) -> None:
        if batch_size < 1 or block_size < 1:
            raise ConfigError(f"batch_size and block_size must be at least 1, got {batch_size} and {block_size}")
        data = np.asarray(data) if not isinstance(data, np.ndarray) else data
        if data.ndim != 1:
            raise DataError(f"token data must be 1-D, got shape {tuple(data.shape)}")
        if len(data) < block_size + 1:
            raise DataError(
                f"the training text has {len(data)} tokens; it needs more than block_size={block_size} "
                f"(use a larger corpus or a smaller model.block_size)"
            )
        self.data, self.batch_size, self.block_size, self.seed = data, int(batch_size), int(block_size), int(seed)
        self.device = device
        self.step = 0
        self._window = np.arange(self.block_size + 1, dtype=np.int64)

    @property
    def device(self) -> torch.device:
        return self._device

    @device.setter
    def device(self, value: torch.device | str) -> None:
        self._device = torch.device(value)

    def offsets(self, step: int) -> np.ndarray:
        """The window starts of batch ``step``: uniform over every full window, as nanoGPT draws them."""
        rng = np.random.default_rng([self.seed & 0xFFFFFFFFFFFFFFFF, step])
        return rng.integers(0, len(self.data) - self.block_size, size=self.batch_size)

    @property
    def population(self) -> int:
        """How many distinct windows batches are drawn from (differential privacy's sample rate: batch_size / this)."""
        return len(self.data) - self.block_size

    def __iter__(self) -> TokenBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.take(self.offsets(self.step), self.step)
        self.step += 1
        return batch

    def take(self, starts: np.ndarray, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of the windows starting at ``starts`` (any number, also none): how differential privacy's
        Poisson sampling (genloop.training.dp) draws its batches. The stream's own step does not move."""
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        windows = np.asarray(self.data[starts[:, None] + self._window], dtype=np.int64).reshape(-1, self.block_size + 1)
        xy = torch.from_numpy(windows)
        x, y = xy[:, :-1], xy[:, 1:]
        if self._device.type == "cuda":
            return x.pin_memory().to(self._device, non_blocking=True), y.pin_memory().to(
                self._device, non_blocking=True
            )
        if self._device.type != "cpu":
            return x.to(self._device), y.to(self._device)
        return x.contiguous(), y.contiguous()

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])
