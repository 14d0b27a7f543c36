"""The diffusion family end to end: training, the pipeline's sampler options, guidance, seeds, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny

import genloop
from genloop.errors import ConfigError, NotFoundError
from genloop.generation.pipelines import DiffusionPipeline, ImagePipeline
from genloop.serialization import load_tensors
from genloop.systems import DataSpec, models
from genloop.systems.ddpm import DDPMConfig, DDPMSystem
from genloop.training import TrainConfig, Trainer

COND = ("model.class_conditional=true", "train.lr=3e-3", "train.warmup_steps=0", "train.ema_decay=null")


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        run = genloop.train("ddpm", overrides=tiny("ddpm", *COND), steps=6, runs_dir=runs, progress=False)
    return run, runs


def test_ddpm_is_registered_as_diffusion() -> None:
    assert models["ddpm"] is DDPMSystem
    assert DDPMSystem.diffusion


def test_overfit_one_batch() -> None:
    """The denoising loss on one fixed batch falls by a large factor: the UNet and its targets line up."""
    torch.manual_seed(0)
    spec = DataSpec(1, 8, 0)
    system = DDPMSystem(
        DDPMConfig(width=16, channel_mults=[1, 2], attention_resolutions=[], num_train_timesteps=50), spec
    )
    x = torch.rand(8, 1, 8, 8) * 2 - 1

    class OneBatch:
        def __next__(self):
            return x, None

        def state_dict(self):
            return {}

    cfg = TrainConfig(steps=200, lr=2e-3, precision="fp32", ema_decay=None, log_every=1000, checkpoint_every=1000)
    trainer = Trainer(system, OneBatch(), cfg, progress=False)
    torch.manual_seed(1)
    with torch.no_grad():
        first = sum(system.training_step(_NoStep((x, None)))["loss"].item() for _ in range(20)) / 20
    trainer.fit()
    torch.manual_seed(1)
    with torch.no_grad():
        last = sum(system.training_step(_NoStep((x, None)))["loss"].item() for _ in range(20)) / 20
    assert last < first / 4, (first, last)


class _NoStep:
    """An optimizer handle that evaluates the losses on one batch without updating anything."""

    def __init__(self, batch):
        self.batch = batch

    def step(self, group, loss_fn):
        return loss_fn(self.batch)


def test_pipeline_samplers_steps_and_seeds(cond_run) -> None:
    run, runs = cond_run
    pipe = genloop.load(run.id, runs_dir=runs)
    assert isinstance(pipe, DiffusionPipeline)
    a = pipe(n=3, seed=5, steps=3, sampler="ddim", class_label=2)
    assert a.tensors.shape == (3, 1, 8, 8) and a.tensors.abs().max() <= 1
    assert a.recipe["sampler"] == "ddim" and a.recipe["sampling_steps"] == 3
    assert a.recipe_of(1)["seed"] == 6 and a.recipe_of(1)["class_label"] == 2
    assert torch.equal(a.tensors, pipe(n=3, seed=5, steps=3, sampler="ddim", class_label=2).tensors)  # seeded
    # image i of a batch == the same image generated alone with seed + i, for every sampler (DDPM is stochastic)
    for sampler in ("ddpm", "ddim", "dpmpp-2m"):
        batch = pipe(n=3, seed=5, steps=3, sampler=sampler, class_label=2)
        alone = pipe(n=1, seed=7, steps=3, sampler=sampler, class_label=2)
        assert torch.allclose(batch.tensors[2], alone.tensors[0], atol=1e-5), sampler
    # the sampler and the number of steps change the result; the model stays the same
    assert not torch.equal(pipe(n=3, seed=5, steps=3, sampler="dpmpp-2m", class_label=2).tensors, a.tensors)
    assert not torch.equal(pipe(n=3, seed=5, steps=4, sampler="ddim", class_label=2).tensors, a.tensors)


def test_guidance_on_and_off(cond_run) -> None:
    run, runs = cond_run
    pipe = genloop.load(run.id, runs_dir=runs)
    g1 = pipe(n=2, seed=0, steps=3, class_label=4, guidance=1.0).tensors
    g3 = pipe(n=2, seed=0, steps=3, class_label=4, guidance=3.0).tensors
    g0 = pipe(n=2, seed=0, steps=3, class_label=4, guidance=0.0).tensors
    assert not torch.equal(g1, g3) and not torch.equal(g1, g0)
    # guidance 0 is the unconditional model: the requested class no longer matters
    assert torch.allclose(g0, pipe(n=2, seed=0, steps=3, class_label=7, guidance=0.0).tensors)
    # guidance mixes the two predictions linearly
    s = pipe.system
    x = torch.randn(2, 1, 8, 8)
    y = torch.tensor([1, 2])
    cond, uncond = s.predict(x, 10, y, 1.0), s.predict(x, 10, y, 0.0)
    assert torch.allclose(s.predict(x, 10, y, 2.5), uncond + 2.5 * (cond - uncond), atol=1e-5)


def test_class_defaults_and_errors(cond_run) -> None:
    run, runs = cond_run
    pipe = genloop.load(run.id, runs_dir=runs)
    out = pipe(n=12, seed=0, steps=2)
    assert out.labels.tolist() == [i % 10 for i in range(12)]  # classes in turn
    with pytest.raises(ConfigError, match="between 0 and 9"):
        pipe(n=2, class_label=10)
    with pytest.raises(ConfigError, match="2 class labels for 3"):
        pipe(n=3, class_label=[1, 2])
    with pytest.raises(NotFoundError, match="unknown sampler 'euler'"):
        pipe(n=1, sampler="euler")
    with pytest.raises(ConfigError, match="eta"):
        pipe(n=1, sampler="ddpm", eta=0.5)


def test_unconditional_refuses_class_and_gan_refuses_sampler_options() -> None:
    run = genloop.train("ddpm", overrides=tiny("ddpm"), steps=2, progress=False)
    pipe = genloop.load(run.id)
    with pytest.raises(ConfigError, match="unconditional"):
        pipe(n=1, class_label=1)
    with pytest.raises(ConfigError, match="guidance needs a class-conditional model"):
        pipe(n=1, guidance=2.0)
    gan = genloop.train("dcgan", overrides=tiny("dcgan"), steps=2, progress=False)
    gpipe = genloop.load(gan.id)
    assert type(gpipe) is ImagePipeline
    with pytest.raises(ConfigError, match="one step; steps, sampler apply to diffusion models only"):
        gpipe(n=1, steps=10, sampler="ddim")


def test_bad_configs_fail_before_the_run_exists(tmp_path) -> None:
    from genloop.runs import RunStore

    with pytest.raises(ConfigError, match="needs a labelled dataset"):
        DDPMSystem(DDPMConfig(class_conditional=True), DataSpec(1, 8, 0))
    with pytest.raises(NotFoundError, match="unknown sampler"):
        genloop.train("ddpm", overrides=tiny("ddpm", "model.sampler=heun"), steps=1, progress=False)
    with pytest.raises(ConfigError, match="prediction_type"):
        genloop.train("ddpm", overrides=tiny("ddpm", "model.prediction_type=x0"), steps=1, progress=False)
    assert RunStore().list() == []


def test_v_prediction_trains_and_samples() -> None:
    run = genloop.train("ddpm", overrides=tiny("ddpm", "model.prediction_type=v_prediction"), steps=3, progress=False)
    out = genloop.load(run.id)(n=2, seed=0, steps=3)
    assert torch.isfinite(out.tensors).all()


def test_quick_eval_keeps_best_and_does_not_change_training() -> None:
    """Evaluating during training writes best.safetensors but trains the very same weights."""
    extra = ("train.eval_every=2", "train.eval_samples=20", "train.eval_time_share=1.0")
    with_eval = genloop.train("ddpm", overrides=tiny("ddpm", *COND, *extra), steps=4, progress=False)
    without = genloop.train("ddpm", overrides=tiny("ddpm", *COND), steps=4, progress=False)
    a, _ = load_tensors(with_eval.dir / "model.safetensors")
    b, _ = load_tensors(without.dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    best = with_eval.info["best"]
    assert best["metric"] == "fid" and best["step"] in (2, 4)
    assert (with_eval.dir / "best.safetensors").is_file()
    lines = [line for line in (with_eval.dir / "metrics.jsonl").read_text().splitlines() if "eval/fid" in line]
    assert len(lines) >= 1 and "eval/class_accuracy" in lines[0]  # later ones may be skipped by the time share
    pipe = genloop.load(with_eval.id, checkpoint="best")
    assert pipe.info["step"] == best["step"] and pipe.info["checkpoint"] == "best"
    with pytest.raises(NotFoundError, match="no best checkpoint"):
        genloop.load(without.id, checkpoint="best")
    with pytest.raises(ConfigError, match="unknown train.select_metric"):
        genloop.train("ddpm", overrides=tiny("ddpm", "train.select_metric=psnr"), steps=1, progress=False)


def test_best_checkpoint_follows_the_metric_direction(tmp_path) -> None:
    """A scripted evaluator: best.safetensors holds the step with the lowest FID (or highest recall)."""
    from genloop.data import ImageBatches

    for metric, values, best_step in (("fid", [3.0, 1.0, 2.0], 4), ("recall", [0.2, 0.1, 0.5], 6)):
        scripted = iter(values)
        system = DDPMSystem(DDPMConfig(width=8, channel_mults=[1, 2], attention_resolutions=[]), DataSpec(1, 8, 0))
        batches = ImageBatches(torch.zeros(32, 1, 8, 8, dtype=torch.uint8), None, 8, seed=0)
        cfg = TrainConfig(
            steps=6,
            eval_every=2,
            eval_time_share=1.0,
            select_metric=metric,
            precision="fp32",
            tensorboard=False,
            log_every=1,
        )
        run_dir = tmp_path / metric
        run_dir.mkdir()
        trainer = Trainer(
            system,
            batches,
            cfg,
            run_dir,
            progress=False,
            evaluator=lambda s, metric=metric, scripted=scripted: {metric: next(scripted)},
        )
        trainer.fit()
        assert trainer.best["step"] == best_step
        assert trainer.best["value"] == (min(values) if metric == "fid" else max(values))
        assert load_tensors(run_dir / "best.safetensors")[1]["step"] == best_step
