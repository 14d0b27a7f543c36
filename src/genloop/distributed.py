"""Running under ``torchrun``: which process this is, and the few collective operations GenLoop needs.

GenLoop does not launch processes itself. ``torchrun`` (or ``genloop train --nproc N``, which calls
torchrun's own launcher) starts one process per device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
and the rendezvous variables; :func:`setup` joins the process group (gloo on CPU, NCCL on CUDA). Without
those variables everything here is the single-process identity, so no caller needs an ``if``.

Two ideas make N processes train exactly what one process trains:

* **A global batch, sharded.** ``data.batch_size`` is the *global* batch. Every rank draws the same global
  batch (the streams are seeded) and keeps its own contiguous rows (:class:`ShardedBatches`).
* **Per-sample noise drawn globally.** A GAN's latents, a VAE's reparameterisation noise, a diffusion
  model's timesteps are drawn for the whole global batch from the (identical) RNG of every rank, and each
  rank keeps its rows (:func:`randn`, :func:`rand`, :func:`randint`). One process draws the same tensor in
  one piece, so the noise per sample does not depend on the number of processes, and every rank's RNG
  stays in step (a checkpoint's RNG state is every rank's).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import ConfigError


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> Context:
    """What torchrun's environment says about this process (rank 0 of 1 without torchrun)."""
    try:
        return Context(
            int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
        )
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def setup(device: torch.device, timeout_minutes: float = 30.0) -> Context:
    """Join torchrun's process group once (idempotent); the single-process context without torchrun."""
    ctx = launched()
    if ctx.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        timeout = datetime.timedelta(minutes=timeout_minutes)
        store = _attempt_store(ctx, timeout)
        dist.init_process_group(
            backend_for(device), store=store, rank=ctx.rank, world_size=ctx.world_size, timeout=timeout, **kwargs
        )
    return ctx


def _attempt_store(ctx: Context, timeout: datetime.timedelta) -> dist.Store:
    """torchrun's key-value store, with keys of this attempt only.

    After ``--max-restarts`` restarts a job, the store torchrun's agent hosts may still hold the previous
    attempt's keys, among them the dead rank 0's gloo address: a restarted rank 1 reading it first would try
    to connect to a process that no longer exists. Prefixing every key with the restart count keeps attempts
    apart (what ``init_process_group``'s own ``env://`` does not do).
    """
    try:
        addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    except (KeyError, ValueError):
        raise ConfigError(
            "WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are not set: start the job with torchrun"
        ) from None
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)  # torchrun's agent hosts the store
    host = not agent and ctx.rank == 0  # else rank 0 hosts it (a plain launcher that set the variables)
    store = dist.TCPStore(addr, port, ctx.world_size, is_master=host, timeout=timeout, multi_tenant=not agent)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"genloop/attempt-{attempt}", store)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a run id, a decision)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_true(flags: Sequence[bool]) -> list[bool]:
    """Each flag OR-ed over all ranks: the decisions every rank must take together (stop, diverged)."""
    if not active():
        return list(flags)
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def agree(flags: dict[str, bool], clock: float) -> tuple[dict[str, bool], float]:
    """Flags OR-ed and a clock max-ed over all ranks, in one all-reduce: what every rank decides together."""
    if not active():
        return dict(flags), clock
    t = torch.tensor([float(v) for v in flags.values()] + [clock], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    values = t.tolist()
    return {k: bool(v) for k, v in zip(flags, values[:-1])}, float(values[-1])


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (logged losses describe the global batch, not rank 0's share)."""
    if not active() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, (t / world_size()).tolist()))


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------- sharding
def local_rows(global_rows: int) -> slice:
    """This rank's contiguous rows of a global batch of ``global_rows`` (which the world size divides)."""
    w, r = world_size(), rank()
    if global_rows % w:
        raise ConfigError(
            f"the global batch of {global_rows} rows does not split evenly over {w} processes; "
            f"use a train.batch_size divisible by {w}"
        )
    n = global_rows // w
    return slice(r * n, (r + 1) * n)


def shard(batch: Any) -> Any:
    """This rank's rows of every tensor in a batch (a tensor, or a tuple/list holding tensors and Nones)."""
    if world_size() == 1:
        return batch
    if torch.is_tensor(batch):
        return batch[local_rows(batch.shape[0])]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(b) for b in batch)
    if batch is None:
        return None
    raise TypeError(f"cannot shard a batch of type {type(batch).__name__}")


class ShardedBatches:
    """A seeded stream of global batches, each rank keeping its own rows; resumes like the stream it wraps."""

    def __init__(self, batches: Any) -> None:
        self.inner = batches

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return shard(next(self.inner))

    @property
    def device(self) -> Any:
        return getattr(self.inner, "device", None)

    @device.setter
    def device(self, value: Any) -> None:
        if hasattr(self.inner, "device"):
            self.inner.device = value

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()  # type: ignore[no-any-return]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def __getattr__(self, name: str) -> Any:  # batch_size, block_size, ... of the wrapped stream
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


# ------------------------------------------------------------------------- noise per global sample
def randn(n: int, *shape: int, device: Any = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal noise for this rank's ``n`` rows, drawn for the whole global batch (see the module doc)."""
    w = world_size()
    out = torch.randn(n * w, *shape, device=device, dtype=dtype)
    return out if w == 1 else out[rank() * n : (rank() + 1) * n]


def rand(n: int, *shape: int, device: Any = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Uniform [0, 1) noise for this rank's ``n`` rows, drawn for the whole global batch."""
    w = world_size()
    out = torch.rand(n * w, *shape, device=device, dtype=dtype)
    return out if w == 1 else out[rank() * n : (rank() + 1) * n]


def randint(high: int, n: int, device: Any = None) -> torch.Tensor:
    """Integers in [0, high) for this rank's ``n`` rows, drawn for the whole global batch."""
    w = world_size()
    out = torch.randint(0, high, (n * w,), device=device)
    return out if w == 1 else out[rank() * n : (rank() + 1) * n]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (any picklable object; sizes may differ) on rank 0, in rank order; None elsewhere."""
    if not active():
        return [obj]
    box: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, box, dst=0)
    return box
