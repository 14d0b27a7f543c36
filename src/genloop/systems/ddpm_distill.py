"""Progressive distillation (Salimans & Ho, 2022): a trained DDPM taught to sample in 4, 2 or 1 steps.

A *stage* halves the number of sampling steps. The student starts as a copy of its teacher and learns to do
in one deterministic DDIM step (η = 0) what the teacher does in two: for a clean image x, a noise level t on
the student's N-step grid and ``z_t = α_t·x + σ_t·ε``, the teacher takes two DDIM steps t → t' → t'' (its
2N-step grid), and the student's target is the x̃ for which *one* DDIM step from z_t lands where the
teacher's two did::

    x̃ = (z_t'' − (σ_t''/σ_t)·z_t) / (α_t'' − (σ_t''/σ_t)·α_t)

(at the last step, t'' is the clean image and x̃ is the teacher's second x0 estimate). The student predicts
v (``x0 = α·z − σ·v``), whose scale stays the same at every noise level: an ε-prediction's x0 estimate divides
by α, which is ~0 at the noisiest step where a 1-step sampler starts. The loss is the MSE in v, i.e. the
paper's "SNR + 1" weighting of the x0 error. At the end of a stage the student becomes the next stage's
teacher, and N halves again.

The first stage may imitate a longer, more accurate teacher trajectory instead of two DDIM steps:
``teacher_substeps`` steps of DDIM or of DPM-Solver++ 2M (restarted at z_t) per student step — one stage from
a 24-step DPM-Solver++ teacher to a 4-step student, where halving 16 → 8 → 4 would compound each stage's error.

The teacher must predict v too (``genloop train ddpm --set model.prediction_type=v_prediction``); a
distilled run is itself a valid teacher, for a further halving in a new run. The stage's teacher is held in
this system's state (``teacher.*``), so a checkpoint resumes exactly mid-stage and a run needs its teacher
run only when it starts. Sampling is DDIM with η = 0 on the student's grid (``genloop.schedulers``' trailing
spacing, whose N-step grid is every other point of its 2N-step one): the sampler the student was taught,
at ``sampling_steps`` model calls per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .. import distributed
from ..config import from_dict
from ..errors import ConfigError, NotFoundError
from ..models.unet import UNet
from ..schedulers import NoiseScheduleConfig, make_scheduler
from .base import DataSpec, StepFn, System
from .ddpm import DDPMConfig, DDPMSystem, DiffusionSampling


@dataclass
class DDPMDistillConfig:
    name: str = "ddpm-distill"
    teacher: str = ""  # the run to distil: a ddpm run (v-prediction) or a ddpm-distill run; its id or directory
    # one stage per entry: the student learns to do in N steps what its teacher does in 2N; each entry halves the
    # one before (a ddpm-distill teacher samples in 2 × the first entry)
    student_steps: list[int] = field(default_factory=lambda: [8, 4])
    stage_steps: int = 1000  # training steps per stage; the last stage trains until the run ends
    # The first stage's teacher trajectory: each student step imitates ``teacher_substeps`` steps of
    # ``teacher_sampler`` (2 and ddim: Salimans & Ho's halving). More, or DPM-Solver++ 2M, distils a more accurate
    # teacher in one stage. Later stages (and a ddpm-distill teacher, taught for DDIM) always halve with DDIM.
    teacher_substeps: int = 2
    teacher_sampler: Literal["ddim", "dpmpp-2m"] = "ddim"
    # The teacher's network: the root ddpm run's model settings, filled in from the teacher run when this run is
    # made, so that the run loads, resumes and generates without its teacher.
    teacher_model: DDPMConfig | None = None
    sampler: str = "ddim"  # the sampler the student was taught (DDIM, η = 0); generation may pick another
    sampling_steps: int = 0  # default sampling steps; 0: the last stage's (student_steps[-1])
    guidance: float = 1.0  # unconditional models only: kept for the diffusion pipeline's contract

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, str) or not self.teacher.strip():
            raise ConfigError("model.teacher: name the ddpm run to distil (genloop train ddpm-distill --teacher RUN)")
        steps = list(self.student_steps)
        if not steps or any(n < 1 for n in steps):
            raise ConfigError(f"model.student_steps must be a list of step counts >= 1, got {steps}")
        if any(b * 2 != a for a, b in zip(steps, steps[1:])):
            raise ConfigError(f"model.student_steps: each stage halves the steps of the one before, got {steps}")
        if self.teacher_substeps < 2:
            raise ConfigError(f"model.teacher_substeps must be >= 2, got {self.teacher_substeps}")
        if self.teacher_sampler not in ("ddim", "dpmpp-2m"):
            raise ConfigError(f"model.teacher_sampler must be ddim or dpmpp-2m, got '{self.teacher_sampler}'")
        if self.stage_steps < 1:
            raise ConfigError(f"model.stage_steps must be >= 1, got {self.stage_steps}")
        if self.sampling_steps < 0:
            raise ConfigError(f"model.sampling_steps must be >= 0 (0: the last stage's), got {self.sampling_steps}")
        if self.sampling_steps == 0:
            self.sampling_steps = steps[-1]


def teacher_run_dir(teacher: str) -> Path:
    """The teacher's run directory: ``teacher`` is a run directory, or an id in the default run store."""
    from ..run_layout import RunLayout
    from ..runs import RunStore

    path = Path(teacher).expanduser()
    if RunLayout(path).run_info.is_file():
        return path.resolve()
    try:
        return RunStore().get(teacher, paths=False).dir.resolve()
    except NotFoundError as e:
        raise NotFoundError(f"model.teacher: {e}") from None


def _read_teacher(run_dir: Path, spec: DataSpec, cfg: DDPMDistillConfig) -> DDPMConfig:
    """The root ddpm settings of a teacher run, checked: an unconditional v-prediction diffusion run with weights,
    trained on this run's data."""
    from ..run_layout import RunLayout
    from ..serialization import read_json

    files = RunLayout(run_dir)
    config = read_json(files.config)
    model = config.get("model", {})
    kind = model.get("name")
    if kind not in ("ddpm", DDPMDistillConfig.name):
        raise ConfigError(
            f"model.teacher: run {run_dir.name} is a '{kind}' run; ddpm-distill distils a ddpm run (or a distilled one)"
        )
    if not files.weights.is_file():
        raise NotFoundError(f"model.teacher: run {run_dir.name} has no weights yet ({files.weights} is missing)")
    if DataSpec(**config["data_spec"]) != spec:
        raise ConfigError(
            f"model.teacher: run {run_dir.name} was trained on {config['data_spec']}, this run's data is "
            f"{vars(spec)}; train on the teacher's data (genloop train ddpm-distill --teacher RUN takes it by default)"
        )
    if kind == "ddpm":
        root = from_dict(DDPMConfig, model, "model.teacher_model.")
        teacher_steps = None
    else:
        distilled = from_dict(DDPMDistillConfig, model, "model.")
        assert distilled.teacher_model is not None  # filled in when that run was made
        root = distilled.teacher_model
        teacher_steps = distilled.student_steps[-1]
    if root.prediction_type != "v_prediction":
        raise ConfigError(
            f"model.teacher: run {run_dir.name} predicts {root.prediction_type}; distillation needs a v-prediction "
            "teacher (train it with --set model.prediction_type=v_prediction)"
        )
    if root.class_conditional:
        raise ConfigError(
            f"model.teacher: run {run_dir.name} is class-conditional; ddpm-distill distils unconditional runs"
        )
    first_stage = cfg.student_steps[0]
    if teacher_steps is not None and teacher_steps != 2 * first_stage:
        raise ConfigError(
            f"model.student_steps: teacher run {run_dir.name} samples in {teacher_steps} steps, so the first stage "
            f"must be {teacher_steps // 2}, got {first_stage}"
        )
    if teacher_steps is not None and (cfg.teacher_substeps, cfg.teacher_sampler) != (2, "ddim"):
        raise ConfigError(
            f"model.teacher_substeps/teacher_sampler: teacher run {run_dir.name} is distilled for DDIM on its own "
            "steps; its student halves them (teacher_substeps=2, teacher_sampler=ddim)"
        )
    if first_stage * cfg.teacher_substeps > root.num_train_timesteps:
        raise ConfigError(
            f"model.teacher_substeps: {first_stage} x {cfg.teacher_substeps} teacher steps exceed the teacher's "
            f"{root.num_train_timesteps} training timesteps"
        )
    return root


class DDPMDistillSystem(DiffusionSampling, System):
    Config = DDPMDistillConfig
    # the learning rate anneals to its floor over the run (Salimans & Ho anneal within each stage: one stage a run
    # does exactly that); a short EMA, since each stage's student is a different function from the last one's
    train_defaults = {"lr": 3e-4, "schedule": "linear", "ema_decay": 0.995, "warmup_steps": 0, "grad_clip": 1.0}
    ema_target = "unet"
    modality = "image"
    diffusion = True
    distill_step: torch.Tensor  # a buffer: training steps taken

    def __init__(self, config: DDPMDistillConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if config.teacher_model is None:  # a new run: read its teacher's settings (checked) into its own config
            self._teacher_dir: Path | None = teacher_run_dir(config.teacher)
            config.teacher_model = _read_teacher(self._teacher_dir, spec, config)
            config.teacher = str(self._teacher_dir)
        else:  # a run being resumed or loaded: everything it needs is in its config and weights
            self._teacher_dir = None
        root = config.teacher_model
        self.unet = self._unet(root, spec)  # the student: what trains, what the EMA averages, what generates
        self.teacher = self._unet(root, spec).requires_grad_(False)  # the current stage's teacher
        # Training steps taken (a buffer, so checkpoints carry it and resume mid-stage exactly); the stage and
        # its step counts follow from it.
        self.register_buffer("distill_step", torch.zeros((), dtype=torch.int64))
        self.schedule = NoiseScheduleConfig(
            num_train_timesteps=root.num_train_timesteps,
            beta_schedule=root.beta_schedule,
            prediction_type="v_prediction",
        )
        self.noise = make_scheduler("ddim", self.schedule)  # its ā table: the teacher's forward process
        make_scheduler(config.sampler, self.schedule)  # fail now, not after training, on a bad sampler name
        self.parent_run = Path(config.teacher).name  # recorded in run.json as this run's parent
        self._started = False
        if self._teacher_dir is not None:
            self._start()

    @staticmethod
    def _unet(root: DDPMConfig, spec: DataSpec) -> UNet:
        return DDPMSystem(root, spec).unet  # exactly the teacher's architecture, built the way ddpm builds it

    # --- stages ---------------------------------------------------------------------------------
    @property
    def stage(self) -> int:
        """The index of the stage at this training step (the last stage goes on until the run ends)."""
        return min(int(self.distill_step) // self.config.stage_steps, len(self.config.student_steps) - 1)

    def train(self, mode: bool = True) -> DDPMDistillSystem:
        super().train(mode)
        self.teacher.eval()  # the teacher is a fixed function (no dropout) in every mode
        return self

    def _start(self) -> None:
        """Student and first teacher from the teacher run's inference weights.

        Done when a new run is made (so the engine's EMA starts from the teacher too), else at the first training
        step: a run resumed before its first checkpoint rebuilds itself from its config (whose EMA then starts
        from the random init and forgets it within its warm-up). Never when a run is loaded or resumed from a
        checkpoint: the weights there are its own.
        """
        from ..run_layout import RunLayout

        if self._teacher_dir is None:
            self._teacher_dir = teacher_run_dir(self.config.teacher)
        _, tensors, _ = RunLayout(self._teacher_dir).load_pretrained("last")
        weights = {k[len("unet.") :]: v for k, v in tensors.items() if k.startswith("unet.")}
        try:
            self.teacher.load_state_dict(weights)
        except RuntimeError as e:
            name = self._teacher_dir.name
            raise ConfigError(f"model.teacher: the weights of {name} do not fit its config ({e})") from None
        self.unet.load_state_dict(weights)
        self._started = True

    # --- training -------------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"model": list(self.unet.parameters())}

    def training_step(self, opt: StepFn) -> dict[str, torch.Tensor]:
        if int(self.distill_step) == 0 and not self._started:
            self._start()
        stage = self.stage
        cfg = self.config
        solver = (cfg.teacher_substeps, cfg.teacher_sampler) if stage == 0 else (2, "ddim")
        logs = opt.step("model", lambda batch: self._loss(batch, cfg.student_steps[stage], *solver))
        self.distill_step += 1
        if self.stage != stage:  # the stage is over: its student teaches the next one
            self.teacher.load_state_dict(self.unet.state_dict())
        return {**logs, "student_steps": torch.tensor(float(self.config.student_steps[stage]))}

    def _grid(self, steps: int) -> torch.Tensor:
        """The ``steps`` timesteps a DDIM sampler visits, then ``-1`` (the clean data)."""
        sched = make_scheduler("ddim", self.schedule)
        sched.set_timesteps(steps)
        return torch.cat([sched.timesteps, torch.tensor([-1])])

    def _alpha_sigma(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """α_t and σ_t per row (t = -1: α = 1, σ = 0), shaped to broadcast against ``like``, in float32."""
        abar = torch.where(t >= 0, self.noise.alphas_cumprod[t.clamp(min=0)], torch.ones((), dtype=torch.float64))
        shape = (-1,) + (1,) * (like.ndim - 1)
        a = abar.sqrt().to(like.device, torch.float32).reshape(shape)
        s = (1 - abar).clamp(min=0).sqrt().to(like.device, torch.float32).reshape(shape)
        return a, s

    def _lambda(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """λ = log(α/σ) per row (t >= 0), shaped like :meth:`_alpha_sigma`'s."""
        a, s = self._alpha_sigma(t, like)
        return torch.log(a) - torch.log(s)

    @torch.no_grad()
    def _teacher_solve(
        self, z: torch.Tensor, fine: torch.Tensor, start: torch.Tensor, substeps: int, sampler: str
    ) -> torch.Tensor:
        """The teacher's ``substeps`` deterministic steps from ``z`` at ``fine[start]`` to ``fine[start + substeps]``.

        DDIM, or DPM-Solver++ 2M (:mod:`genloop.schedulers.dpmpp`) restarted at ``z``: its update is DDIM's with the
        x0 estimate extrapolated linearly in λ from the previous substep's; the first substep and the jump to
        clean data are first-order, as in the scheduler.
        """
        last_x0: torch.Tensor | None = None
        last_lambda = torch.zeros(())
        for i in range(substeps):
            t, t_next = fine[start + i], fine[start + i + 1]
            v = self.teacher(z, t.to(z.device)).float()
            a, s = self._alpha_sigma(t, z)
            x0 = (a * z - s * v).clamp(-1, 1)  # as the samplers clip (schedulers.base: clip_sample = 1)
            d = x0
            if sampler == "dpmpp-2m" and last_x0 is not None:
                lam, lam_next = self._lambda(t, z), self._lambda(t_next.clamp(min=0), z)
                r = (lam - last_lambda) / (lam_next - lam)
                extrapolated = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * last_x0
                d = torch.where((t_next >= 0).reshape(r.shape).to(z.device), extrapolated, x0)
            if sampler == "dpmpp-2m":
                last_x0, last_lambda = x0, self._lambda(t, z)
            a_next, s_next = self._alpha_sigma(t_next, z)
            z = a_next * d + s_next * (z - a * d) / s
        return z

    def distillation_target(
        self,
        x0: torch.Tensor,
        noise: torch.Tensor,
        index: torch.Tensor,
        steps: int,
        substeps: int = 2,
        sampler: str = "ddim",
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_t, t, ṽ)``: the noisy input at step ``index`` of the ``steps``-step grid, its timestep, and the v
        that makes one student DDIM step land where ``substeps`` teacher steps do (see the module docstring)."""
        coarse, fine = self._grid(steps), self._grid(substeps * steps)
        t, t_next = coarse[index], coarse[index + 1]
        a, s = self._alpha_sigma(t, x0)
        z = a * x0 + s * noise
        z_next = self._teacher_solve(z, fine, substeps * index, substeps, sampler)
        a_next, s_next = self._alpha_sigma(t_next, x0)
        ratio = s_next / s
        x_target = (z_next - ratio * z) / (a_next - ratio * a)
        return z, t, (a * z - x_target) / s

    def _loss(self, batch: Any, steps: int, substeps: int, sampler: str) -> dict[str, torch.Tensor]:
        x0 = batch[0].float()
        n = x0.shape[0]
        index = distributed.randint(steps, n, device=torch.device("cpu"))
        noise = distributed.randn(n, *x0.shape[1:], device=x0.device, dtype=torch.float32)
        z, t, v_target = self.distillation_target(x0, noise, index, steps, substeps, sampler)
        pred = self.unet(z.to(batch[0].dtype), t.to(x0.device)).float()
        return {"loss": F.mse_loss(pred, v_target)}

    # --- inference ------------------------------------------------------------------------------
    def predict(
        self, x: torch.Tensor, t: int, labels: torch.Tensor | None = None, guidance: float = 1.0
    ) -> torch.Tensor:
        """The student's v at timestep ``t`` (one model call)."""
        tt = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        return self.unet(x, tt).float()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Samples in the current stage's step count (the sample grids written during training)."""
        from ..generation.pipelines import denoise

        device = next(self.parameters()).device
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.config.student_steps[self.stage])
        return denoise(self, scheduler, self.sample_latents(n, generator).to(device), None, 1.0, generator).clamp(-1, 1)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError("a diffusion model has no one-step decoder; sample with DiffusionPipeline")


def teacher_data(teacher: str) -> dict[str, Any]:
    """The data settings a teacher run trained on (a distilled run's data, unless told otherwise)."""
    from ..run_layout import RunLayout
    from ..serialization import read_json

    return dict(read_json(RunLayout(teacher_run_dir(teacher)).config)["data"])


__all__ = ["DDPMDistillConfig", "DDPMDistillSystem", "teacher_data", "teacher_run_dir"]
