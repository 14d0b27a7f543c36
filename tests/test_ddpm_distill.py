"""Progressive distillation (``ddpm-distill``): a student run whose parent is its DDPM teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import cli, tiny

import genloop
from genloop.errors import ConfigError, NotFoundError
from genloop.generation.pipelines import load_system
from genloop.runs import RunStore
from genloop.serialization import load_tensors
from genloop.systems import models
from genloop.systems.ddpm_distill import DDPMDistillConfig, DDPMDistillSystem

V = "model.prediction_type=v_prediction"
COMMON = ["data.image_size=8", "train.batch_size=16", "train.log_every=1", "train.sample_every=0"]
COMMON += ["train.precision=auto", "train.tensorboard=false", "train.threads=1"]


def distill(teacher: str, *extra: str) -> list[str]:
    return [*COMMON, f"model.teacher={teacher}", *extra]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny v-prediction DDPM (100 training timesteps), trained once; named by its run directory."""
    runs = tmp_path_factory.mktemp("teacher_runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_CACHE_DIR", str(runs.parent / "teacher_cache"))
        run = genloop.train("ddpm", overrides=tiny("ddpm", V), steps=3, seed=1, runs_dir=runs, progress=False)
    return str(run.dir)


def _checkpoint(run_dir: Path) -> dict[str, torch.Tensor]:
    tensors = load_tensors(run_dir / "checkpoints" / "last.safetensors")[0]
    return {k: v for k, v in tensors.items() if not k.startswith("rng/")}


def test_registered_as_a_diffusion_family() -> None:
    cls = models["ddpm-distill"]
    assert cls is DDPMDistillSystem and cls.diffusion and cls.modality == "image"


def test_student_starts_as_its_teacher_and_records_its_parent(teacher: str) -> None:
    run = genloop.train("ddpm-distill", overrides=distill(teacher, "model.student_steps=[4]"), steps=1, progress=False)
    info = RunStore().get(run.id).info
    assert info["parent"] == Path(teacher).name
    config = json.loads((run.dir / "config.json").read_text())["model"]
    assert config["teacher"] == str(Path(teacher).resolve())
    assert config["teacher_model"]["width"] == 8 and config["sampling_steps"] == 4  # the run is self-contained
    # before any step, the student's and the stage teacher's weights are the teacher run's inference weights
    cfg = DDPMDistillConfig(teacher=teacher, student_steps=[4])
    system = DDPMDistillSystem(cfg, load_system(run.dir)[0].spec)
    teacher_weights = load_system(teacher)[0].unet.state_dict()
    for k, v in teacher_weights.items():
        assert torch.equal(system.unet.state_dict()[k], v) and torch.equal(system.teacher.state_dict()[k], v), k


def test_k_step_sampler_makes_exactly_k_model_calls(teacher: str) -> None:
    run = genloop.train("ddpm-distill", overrides=distill(teacher, "model.student_steps=[4]"), steps=2, progress=False)
    pipe = genloop.load(run.id)
    calls = []
    pipe.system.unet.register_forward_hook(lambda *_: calls.append(1))
    for k in (1, 2, 4):
        calls.clear()
        out = pipe(n=3, seed=0, steps=k)
        assert out.tensors.shape == (3, 1, 8, 8) and out.tensors.abs().max() <= 1
        assert len(calls) == k and out.recipe["sampling_steps"] == k and out.recipe["sampler"] == "ddim"
        assert torch.equal(out.tensors, pipe(n=3, seed=0, steps=k).tensors)  # same seed, same images
    assert pipe(n=1, seed=0).recipe["sampling_steps"] == 4  # by default, the last stage's step count


def test_one_stage_lowers_the_mismatch_with_two_teacher_steps(teacher: str) -> None:
    """The student's one DDIM step moves towards the teacher's two on a fixed batch (the distillation loss)."""
    run = genloop.train(
        "ddpm-distill",
        overrides=distill(teacher, "model.student_steps=[2]", "train.lr=1e-3"),
        steps=40,
        progress=False,
    )
    trained, _ = load_system(run.dir)
    start = DDPMDistillSystem(DDPMDistillConfig(teacher=teacher, student_steps=[2]), trained.spec)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(64, 1, 8, 8, generator=g)
    index = torch.randint(2, (64,), generator=g)

    def mismatch(system: DDPMDistillSystem) -> float:
        with torch.no_grad():
            z, t, v_target = system.distillation_target(x0, noise, index, 2)
            return float(torch.nn.functional.mse_loss(system.unet(z, t), v_target))

    assert torch.equal(trained.teacher.conv_in.weight, start.teacher.conv_in.weight)  # one stage: the same teacher
    before, after = mismatch(start), mismatch(trained)
    assert after < 0.7 * before, (before, after)


def test_resume_mid_stage_and_across_a_stage_is_exact(teacher: str) -> None:
    # a constant learning rate: the family's linear decay follows train.steps, which the part run sets to 2
    extra = ("model.student_steps=[4,2]", "model.stage_steps=3", "train.schedule=constant")
    full = genloop.train("ddpm-distill", overrides=distill(teacher, *extra), steps=6, progress=False)
    part = genloop.train("ddpm-distill", overrides=distill(teacher, *extra), steps=2, progress=False)
    resumed = genloop.resume(part.id, steps=6, progress=False)
    a, b = _checkpoint(full.dir), _checkpoint(resumed.dir)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    assert int(a["model/distill_step"]) == 6
    # the second stage's teacher is the first stage's student, not the teacher run
    original = load_system(teacher)[0].unet.state_dict()
    assert not torch.equal(a["model/teacher.conv_in.weight"], original["conv_in.weight"])
    steps = [json.loads(line)["student_steps"] for line in (resumed.dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 4, 4, 2, 2, 2]
    assert genloop.load(resumed.id).system.config.sampling_steps == 2


def test_a_distilled_run_teaches_the_next_halving(teacher: str) -> None:
    four = genloop.train("ddpm-distill", overrides=distill(teacher, "model.student_steps=[4]"), steps=2, progress=False)
    two = genloop.train("ddpm-distill", overrides=distill(four.id, "model.student_steps=[2]"), steps=2, progress=False)
    assert RunStore().get(two.id).info["parent"] == four.id
    assert genloop.load(two.id)(n=2, seed=0).tensors.shape == (2, 1, 8, 8)
    with pytest.raises(ConfigError, match="first stage must be 2"):
        genloop.train("ddpm-distill", overrides=distill(four.id, "model.student_steps=[1]"), steps=1, progress=False)
    with pytest.raises(ConfigError, match="halves them"):
        overrides = distill(four.id, "model.student_steps=[2]", "model.teacher_sampler=dpmpp-2m")
        genloop.train("ddpm-distill", overrides=overrides, steps=1, progress=False)


def test_bad_teachers_and_settings_fail_before_the_run_exists(teacher: str) -> None:
    eps = genloop.train("ddpm", overrides=tiny("ddpm"), steps=1, progress=False).id
    gan = genloop.train("dcgan", overrides=tiny("dcgan"), steps=1, progress=False).id
    before = {r.id for r in RunStore().list()}
    cases = [
        (NotFoundError, "no run 'nosuch'", distill("nosuch")),
        (ConfigError, "distils a ddpm run", distill(gan)),
        (ConfigError, "v-prediction teacher", distill(eps)),
        (ConfigError, "halves the steps", distill(teacher, "model.student_steps=[4,3]")),
        (ConfigError, "student_steps", distill(teacher, "model.student_steps=[]")),
        (ConfigError, "name the ddpm run", COMMON),
        (ConfigError, "trained on", distill(teacher, "data.image_size=16")),
        (ConfigError, "stage_steps", distill(teacher, "model.stage_steps=0")),
        (ConfigError, "teacher_substeps must be", distill(teacher, "model.teacher_substeps=1")),
        (ConfigError, "teacher_sampler", distill(teacher, "model.teacher_sampler=ddpm")),
        (ConfigError, "exceed", distill(teacher, "model.student_steps=[64]", "model.teacher_substeps=2")),
    ]
    for error, words, overrides in cases:
        with pytest.raises(error, match=words):
            genloop.train("ddpm-distill", overrides=overrides, steps=1, progress=False)
    assert {r.id for r in RunStore().list()} == before  # nothing was left behind


def test_cli_train_then_generate(capsys, tmp_path: Path) -> None:
    code, out, err = cli(
        capsys, "train", "ddpm", *[a for s in tiny("ddpm", V) for a in ("--set", s)], "--steps", "2", "--quiet"
    )
    assert code == 0, err
    teacher = out.strip().splitlines()[-1]
    args = ["--set", "model.student_steps=[2]", "--set", "train.batch_size=16", "--set", "train.threads=1"]
    code, out, err = cli(capsys, "train", "ddpm-distill", "--teacher", teacher, *args, "--steps", "2", "--quiet")
    assert code == 0, err
    student = out.strip().splitlines()[-1]
    run_dir = tmp_path / "runs" / student
    assert json.loads((run_dir / "config.json").read_text())["data"]["image_size"] == 8  # the teacher's data
    assert json.loads((run_dir / "run.json").read_text())["parent"] == teacher
    code, out, err = cli(capsys, "generate", student, "--n", "3", "--seed", "0")
    assert code == 0, err
    assert len(list((run_dir / "generated").glob("sample_*.png"))) == 3

    code, _, err = cli(capsys, "train", "ddpm-distill", "--teacher", "nosuch", "--steps", "1", "--quiet")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and "nosuch" in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m"])
def test_the_teacher_trajectory_is_its_samplers(teacher: str, sampler: str) -> None:
    """One student step over the whole range imitates exactly the teacher's k-step sampler run (steps=1)."""
    ddpm, _ = load_system(teacher)
    system = DDPMDistillSystem(DDPMDistillConfig(teacher=teacher, student_steps=[1]), ddpm.spec)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(5, 1, 8, 8, generator=g) * 2 - 1, torch.randn(5, 1, 8, 8, generator=g)
    z, t, v = system.distillation_target(x0, noise, torch.zeros(5, dtype=torch.long), 1, 6, sampler)
    a, s = system._alpha_sigma(t, z)
    imitated = a * z - s * v  # the x0 of one DDIM step from z with the target v: where the teacher's steps land
    scheduler = ddpm.make_scheduler(sampler)
    scheduler.set_timesteps(6)
    from genloop.generation.pipelines import denoise

    torch.testing.assert_close(imitated, denoise(ddpm, scheduler, z, None, 1.0), rtol=1e-4, atol=1e-4)
