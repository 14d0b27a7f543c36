"""GenLoop's DCGAN training step against pytorch/examples' reference step, images/s in fp32 and bf16, one run.

The architecture is pytorch/examples' ``dcgan`` at its defaults: 64 px RGB, batch 64, nz=100, ngf=ndf=64
(GenLoop: ``z_dim=100, g_width=32, d_width=64`` — ``g_width`` counts channels at full resolution, so 32 gives
the same 512 maps at 4x4 as ngf*8), Adam lr 2e-4, betas (0.5, 0.999), BCE.

- **reference**: the examples' networks and step, written here from its architecture (ConvTranspose/BatchNorm/
  ReLU generator, Conv/BatchNorm/LeakyReLU discriminator, sigmoid + ``BCELoss``), and its step: D on real
  (backward), one G forward, D on the detached fakes (backward), D update; D on the same fakes (backward
  through D and G), G update.
- **genloop**: ``GANSystem.training_step`` through the engine's own ``Optimizers`` (AdamW groups, the same
  autocast) plus its EMA update of the generator, i.e. the engine's inner loop without logging.
- **genloop channels-last** / **genloop compiled**: the same with the networks (and batches) in channels-last
  memory, and with each network ``torch.compile``-d in place (what ``train.compile=true`` does).

Both read the same pre-made batch of random images (the data pipeline is excluded from both clocks: GenLoop's
decoded-once cache is a separate gain). The arms alternate in short blocks, repeated, so load on a shared
machine falls on all alike; the table gives median images/s and each arm's ratio to the reference in the same
precision. bf16 runs both under ``torch.autocast("cpu", torch.bfloat16)``.

    python benchmarks/bench_dcgan_step.py                  # ~6 minutes on 2 cores -> results/dcgan_step.json
    python benchmarks/bench_dcgan_step.py --steps 2 --repeats 1 --arms reference genloop    # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from genloop.systems import DataSpec, models
from genloop.training.config import TrainConfig
from genloop.training.ema import EMA
from genloop.training.engine import Optimizers

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_flags, cpu_name  # noqa: E402

BATCH, SIZE, NZ, NGF, NDF, NC = 64, 64, 100, 64, 64, 3


def reference_networks() -> tuple[nn.Module, nn.Module]:
    """pytorch/examples' DCGAN generator and discriminator at 64 px, initialised as it does."""

    def up(cin: int, cout: int, first: bool = False) -> list[nn.Module]:
        conv = nn.ConvTranspose2d(cin, cout, 4, 1 if first else 2, 0 if first else 1, bias=False)
        return [conv, nn.BatchNorm2d(cout), nn.ReLU(True)]

    def down(cin: int, cout: int, norm: bool = True) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), *([nn.BatchNorm2d(cout)] if norm else [])] + [
            nn.LeakyReLU(0.2, True)
        ]

    g = nn.Sequential(
        *up(NZ, NGF * 8, first=True),
        *up(NGF * 8, NGF * 4),
        *up(NGF * 4, NGF * 2),
        *up(NGF * 2, NGF),
        nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False),
        nn.Tanh(),
    )
    d = nn.Sequential(
        *down(NC, NDF, norm=False),
        *down(NDF, NDF * 2),
        *down(NDF * 2, NDF * 4),
        *down(NDF * 4, NDF * 8),
        nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False),
        nn.Sigmoid(),
    )
    for m in [*g.modules(), *d.modules()]:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return g, d


class Reference:
    """pytorch/examples' training step (dcgan/main.py's loop body, without its printing and image saving)."""

    def __init__(self, real: torch.Tensor) -> None:
        self.g, self.d = reference_networks()
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.criterion = nn.BCELoss()
        self.real = real

    def step(self) -> None:
        real = self.real
        self.d.zero_grad()
        label = torch.full((real.shape[0],), 1.0)
        err_real = self.criterion(self.d(real).view(-1).float(), label)
        err_real.backward()
        fake = self.g(torch.randn(real.shape[0], NZ, 1, 1))
        label.fill_(0.0)
        err_fake = self.criterion(self.d(fake.detach()).view(-1).float(), label)
        err_fake.backward()
        self.opt_d.step()
        self.g.zero_grad()
        label.fill_(1.0)
        err_g = self.criterion(self.d(fake).view(-1).float(), label)
        err_g.backward()
        self.opt_g.step()


class GenLoopStep:
    """GenLoop's dcgan at the reference's architecture, stepped as the engine steps it."""

    def __init__(self, real: torch.Tensor, channels_last: bool = False, compiled: bool = False) -> None:
        cls = models["dcgan"]
        self.system = cls(cls.Config(z_dim=NZ, g_width=NGF // 2, d_width=NDF), DataSpec(NC, SIZE, 0)).train()
        if channels_last:
            self.system.to(memory_format=torch.channels_last)
            real = real.contiguous(memory_format=torch.channels_last)
        if compiled:
            for module in self.system.children():
                module.compile()
        cfg = TrainConfig(**{**cls.train_defaults, "batch_size": BATCH, "tensorboard": False})
        self.opt = Optimizers(self.system, cfg, torch.device("cpu"), None)
        self.ema = EMA(self.system.generator, cfg.ema_decay or 0.999)
        self.real, self.n = real, 0

    def step(self) -> None:
        self.opt.micro_batches = [(self.real,)]
        self.system.training_step(self.opt)
        self.opt.micro_batches = []
        self.n += 1
        self.ema.update(self.system.generator, self.n)


ARMS = {
    "reference": lambda real: Reference(real),
    "genloop": lambda real: GenLoopStep(real),
    "genloop channels-last": lambda real: GenLoopStep(real, channels_last=True),
    "genloop compiled": lambda real: GenLoopStep(real, compiled=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="training steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per arm and precision")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dcgan_step.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    real = torch.rand(BATCH, NC, SIZE, SIZE) * 2 - 1
    load_before = os.getloadavg()
    result: dict = {
        "benchmark": "dcgan_step",
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": BATCH,
        "image_size": SIZE,
        "steps_per_block": args.steps,
        "repeats": args.repeats,
        "load_average_before": load_before,
        "precisions": {},
    }
    for precision in args.precisions:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        arms = {name: ARMS[name](real) for name in args.arms}
        times: dict[str, list[float]] = {name: [] for name in arms}
        with autocast:
            for name, arm in arms.items():  # warm-up (and compilation) outside the clock
                t0 = time.perf_counter()
                arm.step()
                arm.step()
                print(f"{precision} {name}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
            for _ in range(args.repeats):
                for name, arm in arms.items():
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        arm.step()
                    times[name].append(BATCH * args.steps / (time.perf_counter() - t0))
        med = {name: statistics.median(v) for name, v in times.items()}
        base = med.get("reference")
        result["precisions"][precision] = {
            name: {
                "images_per_s": med[name],
                "each": times[name],
                "ratio_to_reference": med[name] / base if base else None,
            }
            for name in arms
        }
        for name in arms:
            ratio = f" ({med[name] / base:.2f}x reference)" if base else ""
            print(f"{precision} {name}: {med[name]:.1f} images/s{ratio}", flush=True)
    result["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print()
    print(
        f"{cpu_name()} ({', '.join(cpu_flags()) or 'no AVX2'}), torch {torch.__version__}, {result['threads']} threads"
    )
    print("| step | " + " | ".join(f"{p} images/s | {p} × reference" for p in args.precisions) + " |")
    print("|---|" + "---|---|" * len(args.precisions))
    for name in args.arms:
        cells = []
        for p in args.precisions:
            row = result["precisions"][p][name]
            ratio = row["ratio_to_reference"]
            cells += [f"{row['images_per_s']:.1f}", f"**{ratio:.2f}×**" if ratio else "-"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
