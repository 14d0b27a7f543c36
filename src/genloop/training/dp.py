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

**Sampling.** Opacus's accounting assumes Poisson sampling: each example joins each batch independently with
probability ``q``. That is what ``train.dp.poisson`` (on by default) does: :class:`PoissonBatches` draws, at step
``s``, a Binomial(n, q) number of distinct examples uniformly (the same law as n independent coin flips) from a
generator seeded with ``(train.seed, s)``, and asks the data stream for exactly those examples (its ``take``);
the batch size varies around ``batch_size`` and the reported epsilon is the bound for what was done. It is the
default because nothing in GenLoop's DP path needs a fixed batch: DP already refuses gradient accumulation,
compile, several processes and BatchNorm; the DP optimizer divides the clipped sum by the *expected* batch size,
as Opacus's Poisson mode does. A step whose sample is empty is a noise-only update of every private group (what
the accountant counts; Opacus does the same); the family's other updates (a GAN's generator) skip that step.
``train.dp.poisson=false`` keeps GenLoop's ordinary seeded batches (image families: fixed-size batches from a
shuffled permutation per epoch; text: ``batch_size`` random windows, with replacement); the epsilon reported
then is the Poisson-subsampling epsilon at ``q = batch_size / n`` — the usual approximation (Opacus without
``poisson_sampling``, TF Privacy and JAX privacy examples) — not a proven bound for shuffled batches, which can
be weaker (Chua et al., 2024, "How Private are DP-SGD Implementations?").

**Privacy unit.** One training image; for a language model one training window of ``block_size`` tokens
(``n`` = the number of windows). A token lies in up to ``block_size`` windows, so a guarantee for a token or
a document follows only by group privacy and is much weaker.

**Noise randomness.** The noise of private update ``k`` is drawn from a generator seeded with
``(train.seed, k)``: runs are reproducible and resume bit-exactly. Like Opacus's default (not
``secure_mode``), this is not a cryptographically secure generator; anyone who knows the seed could, in
principle, subtract the noise. Keep ``train.seed`` secret for a release that must hold against that. The same
holds for the Poisson samples (seeded by ``(train.seed, step)``): the amplification by subsampling the epsilon
counts on assumes nobody knows which examples each step drew.

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

import numpy as np
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


def poisson_indices(n: int, rate: float, seed: int, step: int) -> np.ndarray:
    """Step ``step``'s Poisson sample of ``range(n)``: each index independently with probability ``rate``.

    Drawn as a Binomial(n, rate) count, then that many distinct indices uniformly (Floyd's algorithm in numpy:
    O(count), not O(n)); the law is the same as n coin flips. Sorted. Seeded by ``(seed, step)`` only, so a
    resumed run draws exactly the samples the uninterrupted one would.
    """
    rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, step, _POISSON_STREAM])
    k = int(rng.binomial(n, rate))
    return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)


_POISSON_STREAM = 0x9015  # keeps the sampling generator apart from others seeded with (seed, step)


class PoissonBatches:
    """A data stream that yields Poisson samples of ``batches``' examples instead of its own batches.

    The wrapped stream only has to say how many examples it holds (``population``) and build the batch of given
    example indices (``take(indices, step)``). The state is the number of samples drawn.
    """

    def __init__(self, batches: Any, rate: float, seed: int) -> None:
        if not callable(getattr(batches, "take", None)):
            raise ConfigError(
                "train.dp.poisson: this data stream cannot build a batch of chosen examples; set train.dp.poisson=false"
            )
        self.inner, self.n, self.rate, self.seed = batches, population(batches), float(rate), int(seed)
        self.batch_size = int(batches.batch_size)
        self.step = 0

    @property
    def population(self) -> int:
        return self.n

    @property
    def device(self) -> Any:
        return self.inner.device

    @device.setter
    def device(self, value: Any) -> None:
        self.inner.device = value

    def __iter__(self) -> PoissonBatches:
        return self

    def __next__(self) -> Any:
        batch = self.inner.take(poisson_indices(self.n, self.rate, self.seed, self.step), self.step)
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"poisson_step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "poisson_step" not in state:
            raise ConfigError(
                "train.dp.poisson: the checkpoint was trained on shuffled batches; "
                "resume it with train.dp.poisson=false"
            )
        self.step = int(state["poisson_step"])


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
        self.poisson = dp.poisson
        # the stream the engine trains on: Poisson samples (train.dp.poisson), or the data's own batches
        self.batches = PoissonBatches(batches, self.sample_rate, cfg.seed) if dp.poisson else batches
        self.delta = resolve_delta(cfg, self.n)
        self.updates = {group: k for group, (_, k) in private.items()}  # private updates per step, per group
        self.updates_per_step = sum(self.updates.values())
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

    def empty_step(self) -> None:
        """The step of an empty Poisson sample: each private update is noise only (a clipped sum of nothing plus
        Gaussian noise, divided by the expected batch size), counted by the accountant like any other."""
        for group, opt in self.optimizers.items():
            for _ in range(self.updates[group]):
                opt.zero_grad(set_to_none=True)
                for p in opt.params:
                    p.grad_sample = p.new_zeros((0, *p.shape))
                self.before_update(group)
                opt.step()
                self.after_update(group)
                opt.zero_grad(set_to_none=True)

    @staticmethod
    def is_empty(micro_batches: list[Any], units: Any) -> bool:
        """Whether the step's (Poisson) sample holds no example: ``units`` counts a batch's examples."""
        return all(units(b) == 0 for b in micro_batches)

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
            "sampling": self.sampling,
        }

    @property
    def sampling(self) -> str:
        if self.poisson:
            return "poisson (each example joins each step's batch with probability sample_rate)"
        return "shuffled fixed-size batches, accounted as Poisson sampling (the usual approximation)"

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
            "poisson": self.poisson,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the saved budget: the same noise multiplier, and the accountant's history."""
        if state.get("accountant", self.accountant_name) != self.accountant_name:
            raise ConfigError(
                f"train.dp.accountant={self.accountant_name} but this run was accounted with {state['accountant']}"
            )
        saved_poisson = bool(state.get("poisson", False))  # checkpoints from before train.dp.poisson: shuffled
        if saved_poisson != self.poisson:
            was = "Poisson samples" if saved_poisson else "shuffled batches"
            raise ConfigError(
                f"train.dp.poisson={str(self.poisson).lower()} but this run was trained on {was}; resume it with "
                f"train.dp.poisson={str(saved_poisson).lower()}"
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
