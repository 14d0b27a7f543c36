"""Data parallelism for the engine: DistributedDataParallel per optimizer group, and batch norm across ranks.

Why per group: a system computes its losses in ``loss_fn(batch)``, calling whichever sub-modules it likes
(a GAN calls its generator inside the discriminator's loss, under ``no_grad``, and its discriminator
frozen inside the generator's). Wrapping the whole system in DDP would make every update wait for gradients
of parameters the update does not train. Instead each optimizer group gets a small module that *holds* the
group's parameters and whose ``forward`` is ``loss_fn(batch)``: DDP's hooks then fire on exactly the
parameters that update trains, its buckets overlap the all-reduce with the backward pass, and
``no_sync()`` skips the all-reduce on all but the last micro-batch of gradient accumulation.

Batch norm normalises with the statistics of the batch it sees; on N ranks that would be 1/N of the global
batch and training would differ from one process. :func:`sync_batch_norm` swaps each ``BatchNorm`` for one
whose statistics are all-reduced: torch's ``SyncBatchNorm`` on CUDA, :class:`CrossRankBatchNorm` on CPU
(gloo), where torch's does not run. Weights, buffers and state-dict keys are unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import distributed


class _GroupLoss(nn.Module):
    """The parameters of one optimizer group, and ``forward(loss_fn, batch) = loss_fn(batch)`` for DDP."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        super().__init__()
        self.params = nn.ParameterList(params)  # the same Parameter objects the system owns

    def forward(self, loss_fn: Any, batch: Any) -> Any:
        return loss_fn(batch)


class GroupSync:
    """Per-group gradient synchronisation; the identity in a single process."""

    def __init__(self, groups: dict[str, list[nn.Parameter]], device: torch.device) -> None:
        self.ddp: dict[str, DistributedDataParallel] = {}
        if not distributed.active():
            return
        for name, params in groups.items():
            trainable = [p for p in params if p.requires_grad]
            if not trainable:
                continue
            self.ddp[name] = DistributedDataParallel(
                _GroupLoss(trainable),
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=False,
            )

    def loss(self, group: str, loss_fn: Any, batch: Any, sync: bool) -> Any:
        """``loss_fn(batch)``, through DDP when running on several ranks; ``sync=False`` defers the all-reduce."""
        ddp = self.ddp.get(group)
        if ddp is None:
            return loss_fn(batch)
        ctx = contextlib.nullcontext() if sync else ddp.no_sync()
        with ctx:
            return ddp(loss_fn, batch)

    @contextlib.contextmanager
    def backward_context(self, group: str, sync: bool) -> Iterator[None]:
        """DDP's ``no_sync`` must also cover the backward pass of a deferred micro-batch."""
        ddp = self.ddp.get(group)
        if ddp is None or sync:
            yield
            return
        with ddp.no_sync():
            yield


class CrossRankBatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are taken over the global batch on every rank (CPU/gloo).

    The per-channel sum, sum of squares and count are all-reduced with an autograd-aware all-reduce, so the
    gradient flows through the statistics as in one process over the whole batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed.active()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        xf = x.float()
        dims = [0, 2, 3]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        stats = all_reduce(stats, op=dist.ReduceOp.SUM)
        c = x.shape[1]
        total = stats[-1]
        mean = stats[:c] / total
        var = (stats[c : 2 * c] / total - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                tracked = self.num_batches_tracked
                if self.momentum is not None:
                    m = self.momentum
                else:  # a cumulative average, as BatchNorm2d's momentum=None
                    m = 1.0 / (float(tracked) + 1.0) if tracked is not None else 0.0
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased.detach())
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def sync_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """Batch norm across ranks, in place (a no-op in a single process)."""
    if not distributed.active():
        return module
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, CrossRankBatchNorm):
            new = CrossRankBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            if child.affine:  # keep the very Parameter objects (optimizer groups may already hold them)
                new.weight, new.bias = child.weight, child.bias
            new.train(child.training)
            setattr(module, name, new.to(device))
        else:
            sync_batch_norm(child, device)
    return module
