"""Differentially private training (DP-SGD) through Opacus: ``train.dp.epsilon=...``.

What happens in a DP run:

* The family names its *private* optimizer group(s) and the module each trains (``System.dp_private``):
  VAE, DDPM and GPT train every parameter privately; a GAN privatises its discriminator only. The
  discriminator is the only network that reads the training data; the generator's update is computed from
  the (private) discriminator's output on fakes, so by the post-processing property of differential
  privacy the generator, and every sample it draws, is as private as the discriminator (the argument of
  DP-GAN, Xie et al. 2018, and of Opacus's own DCGAN example).
* Each private module is wrapped by Opacus's ``GradSampleModule`` (per-sample gradients from per-layer
  hooks, functorch for layers Opacus has no rule for); the group's AdamW is wrapped by Opacus's
  ``DPOptimizer``, which clips each sample's gradient to ``max_grad_norm``, sums, adds Gaussian noise of
  standard deviation ``noise_multiplier * max_grad_norm`` and divides by the batch size before AdamW steps.
* An Opacus accountant (RDP or PRV) counts every private update at sample rate ``q = batch_size / n``; the
  spent epsilon is logged (``dp_epsilon`` in metrics.jsonl), saved with the accountant's history in every
  checkpoint (so a resumed run continues the budget instead of silently restarting it) and recorded in
  run.json at the end.

**Sampling, honestly.** Opacus's accounting assumes Poisson sampling (each example joins each batch
independently with probability ``q``). GenLoop keeps its seeded, resumable batches: image families draw
fixed-size batches from a shuffled permutation per epoch, text families draw ``batch_size`` random windows
(with replacement). The epsilon reported is the Poisson-subsampling epsilon at ``q = batch_size / n`` — the
standard approximation used by most DP-SGD code (Opacus without ``poisson_sampling``, TF Privacy and JAX
privacy examples) — not a proven bound for shuffled batches, which can be weaker (Chua et al., 2024, "How
Private are DP-SGD Implementations?").

**Privacy unit.** One training image; for a language model one training window of ``block_size`` tokens
(``n`` = the number of windows). A token lies in up to ``block_size`` windows, so a guarantee for a token or
a document follows only by group privacy and is much weaker.

**Noise randomness.** The noise of private update ``k`` is drawn from a generator seeded with
``(train.seed, k)``: runs are reproducible and resume bit-exactly. Like Opacus's default (not
``secure_mode``), this is not a cryptographically secure generator; anyone who knows the seed could, in
principle, subtract the noise. Keep ``train.seed`` secret for a release that must hold against that.

**What is refused** (one ConfigError line each): mixed or half precision (DP runs in fp32), gradient
accumulation, ``train.grad_clip`` (clipping is per sample: ``train.dp.max_grad_norm``), ``train.compile``,
several processes, BatchNorm in a private module, and families whose losses Opacus cannot take per-sample
gradients of (gradient penalties: WGAN-GP, ResGAN's R1; pretrained Hugging Face models; music-gpt, untested).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .config import TrainConfig


def _layer_norm_grad_sample(
    layer: nn.LayerNorm, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Opacus's LayerNorm rule, also for ``bias=False`` layers (GenLoop's GPT has none; Opacus 1.6 crashes)."""
    from opacus.utils.tensor_utils import sum_over_all_but_batch_and_last_n

    x = activations[0]
    out: dict[nn.Parameter, torch.Tensor] = {}
    if layer.weight is not None and layer.weight.requires_grad:
        normed = F.layer_norm(x, layer.normalized_shape, eps=layer.eps)
        out[layer.weight] = sum_over_all_but_batch_and_last_n(normed * backprops, layer.weight.dim())
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = sum_over_all_but_batch_and_last_n(backprops, layer.bias.dim())
    return out


def _opacus() -> Any:
    try:
        import opacus
    except ImportError:
        raise ConfigError("train.dp needs Opacus: pip install 'opacus>=1.5'") from None
    from opacus.grad_sample.grad_sample_module import GradSampleModule

    GradSampleModule.GRAD_SAMPLERS[nn.LayerNorm] = _layer_norm_grad_sample
    return opacus


def per_example_gradients(module: nn.Module) -> Any:
    """Hook ``module`` (in place) so that backward also leaves each example's gradient in ``p.grad_sample``.

    In-place activations (a GAN's ``LeakyReLU(inplace=True)``) would modify the views Opacus's backward hooks
    return, which autograd forbids; they are switched to out-of-place, which computes the same values.
    """
    _opacus()
    from opacus import GradSampleModule

    # Opacus's backward hooks on a network's first layer (whose input needs no gradient) make torch warn at
    # every step; the per-sample gradients are right (tests/test_dp.py checks them against autograd)
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    for m in module.modules():
        if getattr(m, "inplace", None) is True:
            setattr(m, "inplace", False)  # noqa: B010 (an attribute of some activation modules only)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus's notes on secure RNG and full backward hooks
        return GradSampleModule(module, batch_first=True, loss_reduction="mean")


def make_accountant(name: str) -> Any:
    _opacus()
    from opacus.accountants import PRVAccountant, RDPAccountant

    return RDPAccountant() if name == "rdp" else PRVAccountant()


def resolve_delta(cfg: TrainConfig, n: int) -> float:
    """``train.dp.delta``, or its default: 1e-5, or 1/(10 n) where the data set is too large for 1e-5."""
    delta = cfg.dp.delta if cfg.dp.delta is not None else min(1e-5, 0.1 / n)
    if delta >= 1.0 / n:
        raise ConfigError(
            f"train.dp.delta={delta:g} must be below 1/n = {1.0 / n:.3g} for n={n} training examples "
            f"(a larger delta allows leaking a whole example); use e.g. {0.1 / n:.2g}"
        )
    return delta


def noise_for_target(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """The noise multiplier that spends ``epsilon`` (within Opacus's tolerance 0.01) in ``steps`` updates."""
    _opacus()
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "optimal order is the largest alpha": harmless at small epsilon
            return float(
                get_noise_multiplier(
                    target_epsilon=epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=accountant,
                    epsilon_tolerance=0.01,
                )
            )
    except ValueError as e:
        raise ConfigError(f"train.dp.epsilon={epsilon:g}: no noise multiplier reaches it ({e})") from None


def population(batches: Any) -> int:
    """How many examples the sample rate is taken over (images, or a text's training windows)."""
    n = getattr(batches, "population", None)
    if not isinstance(n, int) or n < 1:
        raise ConfigError("train.dp: this data stream does not say how many examples it holds; DP needs that")
    return n


class PrivateTraining:
    """Opacus per-sample gradients, noisy clipped optimizers and the accountant for one Trainer."""

    def __init__(self, system: Any, batches: Any, cfg: TrainConfig, optimizers: dict[str, Any], world: int) -> None:
        _opacus()
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        dp = cfg.dp
        if world > 1:
            raise ConfigError("train.dp runs in one process for now; distributed DP training is not supported")
        private = system.dp_private()  # {group: (module, private updates per step)}
        self.n = population(batches)
        self.batch_size = int(getattr(batches, "batch_size", cfg.batch_size))
        self.sample_rate = self.batch_size / self.n
        self.delta = resolve_delta(cfg, self.n)
        self.updates_per_step = sum(k for _, k in private.values())
        self.accountant_name = dp.accountant
        self.accountant = make_accountant(dp.accountant)
        self.seed = cfg.seed
        self.target = dp.epsilon
        self.planned_updates = cfg.steps * self.updates_per_step if cfg.steps is not None else None
        if dp.noise_multiplier is not None:
            self.noise_multiplier = float(dp.noise_multiplier)
        else:
            assert dp.epsilon is not None and self.planned_updates is not None  # TrainConfig checks both
            self.noise_multiplier = noise_for_target(
                dp.epsilon, self.delta, self.sample_rate, self.planned_updates, dp.accountant
            )
        self.modules: dict[str, Any] = {}
        self.optimizers: dict[str, Any] = {}
        for group, (module, _) in private.items():
            problems = ModuleValidator.validate(module, strict=False)
            if problems:
                first = str(problems[0]).strip().splitlines()[0]
                raise ConfigError(f"train.dp: the {group} network cannot take per-sample gradients: {first}")
            self.modules[group] = per_example_gradients(module)
            self.optimizers[group] = DPOptimizer(
                optimizers[group],
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=dp.max_grad_norm,
                expected_batch_size=self.batch_size,
                loss_reduction="mean",
            )

    @contextlib.contextmanager
    def hooks_for(self, group: str) -> Iterator[None]:
        """Per-example gradients only for ``group``'s own update: a GAN's generator update back-propagates
        through the (frozen) private discriminator, whose hooks must stay quiet then."""
        for name, gsm in self.modules.items():
            if name != group:
                gsm.disable_hooks()
        try:
            yield
        finally:
            for gsm in self.modules.values():
                gsm.enable_hooks()

    def before_update(self, group: str) -> None:
        """Seed the noise of the next private update from (seed, update count): reproducible and resumable."""
        opt = self.optimizers[group]
        device = next(iter(opt.params)).device
        opt.generator = torch.Generator(device).manual_seed(self.seed * 1_000_003 + self.updates_done + 1)

    def after_update(self, group: str) -> None:
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    @property
    def updates_done(self) -> int:
        return sum(int(h[2]) for h in self.accountant.history)

    def epsilon(self) -> float:
        if not self.accountant.history:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(self.accountant.get_epsilon(delta=self.delta))

    def summary(self) -> dict[str, Any]:
        """What run.json records: the spent epsilon and everything it was computed from."""
        return {
            "epsilon": self.epsilon(),
            "target_epsilon": self.target,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "n": self.n,
            "updates": self.updates_done,
            "accountant": self.accountant_name,
            "sampling": "shuffled fixed-size batches, accounted as Poisson sampling (the usual approximation)",
        }

    @property
    def max_grad_norm(self) -> float:
        return float(next(iter(self.optimizers.values())).max_grad_norm)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [list(h) for h in self.accountant.history],
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "delta": self.delta,
            "accountant": self.accountant_name,
            "planned_updates": self.planned_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the saved budget: the same noise multiplier, and the accountant's history."""
        if state.get("accountant", self.accountant_name) != self.accountant_name:
            raise ConfigError(
                f"train.dp.accountant={self.accountant_name} but this run was accounted with {state['accountant']}"
            )
        if abs(float(state["sample_rate"]) - self.sample_rate) > 1e-12:
            raise ConfigError(
                "train.dp: the batch size or data set changed since the checkpoint; the budget would be wrong"
            )
        if self.target is not None and self.planned_updates is not None:
            saved = state.get("planned_updates")
            if saved is not None and self.planned_updates > int(saved):
                raise ConfigError(
                    f"train.dp.epsilon={self.target:g} was planned for {saved} private updates; training on to "
                    f"{self.planned_updates} would spend more than the target (start a new run, or set "
                    f"train.dp.noise_multiplier and accept the larger epsilon)"
                )
        self.noise_multiplier = float(state["noise_multiplier"])
        self.delta = float(state["delta"])
        for opt in self.optimizers.values():
            opt.noise_multiplier = self.noise_multiplier
        self.accountant.history = [tuple(h) for h in state["history"]]
