"""The training engine and the model families: shapes, learning, determinism, exact resume, safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import GENLOOP, cli_env, tiny

import genloop
from genloop.data import ImageBatches
from genloop.errors import ConfigError, TrainingDiverged
from genloop.models.gan import Discriminator, Generator
from genloop.models.vae import ConvVAE
from genloop.runs import RunStore
from genloop.serialization import load_tensors
from genloop.systems import DataSpec, System, models
from genloop.training import TrainConfig, Trainer
from genloop.training.engine import learning_rate


# --- shapes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_gan_shapes(size: int, channels: int) -> None:
    g, d = Generator(8, channels, size, width=4), Discriminator(channels, size, width=4)
    x = g(torch.randn(3, 8))
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (3,)


@pytest.mark.parametrize("size", [8, 32])
def test_vae_shapes(size: int) -> None:
    vae = ConvVAE(3, size, z_dim=5, width=8)
    logits, mu, logvar = vae(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 3, size, size) and mu.shape == logvar.shape == (2, 5)


def test_unsupported_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="8, 16, 32, 64"):
        Generator(8, 1, 24)


# --- learning -------------------------------------------------------------------------------------
def _system(name: str, **cfg) -> System:
    cls = models[name]
    base = {
        "dcgan": dict(z_dim=8, g_width=8, d_width=8),
        "wgan-gp": dict(z_dim=8, g_width=8, d_width=8, n_critic=2),
        "vae": dict(z_dim=4, width=8),
    }[name]
    return cls(cls.Config(**{**base, **cfg}), DataSpec(1, 8, 10))


def _cfg(name: str, **kw) -> TrainConfig:
    base = dict(
        models[name].train_defaults,
        steps=10,
        batch_size=16,
        log_every=1,
        sample_every=0,
        precision="fp32",
        tensorboard=False,
        threads=1,
    )
    return TrainConfig(**{**base, **kw})


def _one_batch(n: int = 16) -> torch.Tensor:
    from sklearn.datasets import load_digits

    digits = torch.tensor(load_digits().images[:n], dtype=torch.float32)  # 0..16, 8x8
    return (digits / 16 * 255).round().to(torch.uint8)[:, None]


def test_vae_overfits_one_batch() -> None:
    images = _one_batch(16)
    trainer = Trainer(_system("vae"), ImageBatches(images, None, 16), _cfg("vae", steps=300, lr=3e-3), progress=False)
    x = ImageBatches(images, None, 16).__next__()[0]
    recon0, kl0 = trainer.system._terms(x)
    trainer.fit()
    with torch.no_grad():
        recon1, _ = trainer.system._terms(x)
    assert recon1.mean() < 0.6 * recon0.mean(), (recon0.mean(), recon1.mean())


@pytest.mark.parametrize("name", ["dcgan", "wgan-gp"])
def test_gan_overfits_one_image(name: str) -> None:
    """Trained on a single image, the generator must learn to draw (nearly) that image."""
    image = _one_batch(1).repeat(16, 1, 1, 1)
    target = image[0].float() / 127.5 - 1
    trainer = Trainer(
        _system(name),
        ImageBatches(image, None, 16),
        _cfg(name, steps=250, lr=1e-3 if name == "dcgan" else 5e-4, ema_decay=None),
        progress=False,
    )
    g = torch.Generator().manual_seed(0)
    before = (trainer.system.eval().sample(16, g) - target).abs().mean()
    trainer.system.train()
    trainer.fit()
    after = (trainer.system.eval().sample(16, torch.Generator().manual_seed(0)) - target).abs().mean()
    assert after < 0.5 * before and after < 0.3, (float(before), float(after))


@pytest.mark.parametrize("name", ["dcgan", "vae"])
def test_every_parameter_group_changes(name: str) -> None:
    system = _system(name)
    before = {k: v.clone() for k, v in system.state_dict().items() if v.is_floating_point()}
    Trainer(system, ImageBatches(_one_batch(32), None, 16), _cfg(name, steps=1), progress=False).fit()
    for group, params in system.param_groups().items():
        names = {id(p) for p in params}
        changed = [k for k, p in system.named_parameters() if id(p) in names and not torch.equal(p.detach(), before[k])]
        assert changed, f"no parameter of group {group} changed"


# --- gradient accumulation -----------------------------------------------------------------------
class _RowNoise:
    """Stands in for torch's random draws during training: row i of a draw is the same numbers whether the
    rows come at once (one batch of K*B) or B at a time (K micro-batches of B).

    Each place in the code that draws (file and line, plus the draw's kind, trailing shape and range) has a
    fixed table of ``period`` = K*B rows and a cursor that moves by the rows drawn and wraps at the end of the
    table. Real noise is drawn in another order under accumulation, so without this the two runs could not be
    compared number for number; keying by the drawing line keeps that true whatever order the lines run in.
    """

    def __init__(self, period: int) -> None:
        self.period, self.tables, self.cursors = period, {}, {}
        self.real = {name: getattr(torch, name) for name in ("randn", "rand", "randint", "randn_like", "rand_like")}

    def _rows(self, key: tuple, n: int, make) -> torch.Tensor:
        caller = sys._getframe(3)  # the line that called torch.randn (or rand, ...): _rows <- _float <- randn
        key = (caller.f_code.co_filename, caller.f_lineno, *key)
        if key not in self.tables:
            self.tables[key] = make(torch.Generator().manual_seed(len(self.tables)))
        start = self.cursors.get(key, 0)
        assert start + n <= self.period, f"a draw of {n} rows crosses a step's batch of {self.period}"
        self.cursors[key] = (start + n) % self.period
        return self.tables[key][start : start + n]

    def _float(self, name: str, size: tuple, device=None, dtype=None, **_) -> torch.Tensor:
        if len(size) == 1 and not isinstance(size[0], int):
            size = tuple(size[0])
        n, rest = size[0], tuple(size[1:])
        rows = self._rows((name, rest), n, lambda g: self.real[name](self.period, *rest, generator=g))
        return rows.to(device=device, dtype=dtype or torch.float32)

    def randn(self, *size, **kw) -> torch.Tensor:
        return self._float("randn", size, **kw)

    def rand(self, *size, **kw) -> torch.Tensor:
        return self._float("rand", size, **kw)

    def randn_like(self, t: torch.Tensor, **kw) -> torch.Tensor:
        return self._float("randn", tuple(t.shape), **{"device": t.device, "dtype": t.dtype, **kw})

    def rand_like(self, t: torch.Tensor, **kw) -> torch.Tensor:
        return self._float("rand", tuple(t.shape), **{"device": t.device, "dtype": t.dtype, **kw})

    def randint(self, *args, device=None, **_) -> torch.Tensor:
        low, high, size = (0, *args) if len(args) == 2 else args
        return self._int(low, high, tuple(size), device)

    def _int(self, low: int, high: int, size: tuple, device) -> torch.Tensor:
        n, rest = size[0], size[1:]
        rows = self._rows(
            ("randint", rest, low, high),
            n,
            lambda g: self.real["randint"](low, high, (self.period, *rest), generator=g),
        )
        return rows.to(device)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in self.real:
            monkeypatch.setattr(torch, name, getattr(self, name))


class _Stream:
    """The given batches in turn, for ever (no shuffling of its own: the test decides what each step sees)."""

    def __init__(self, batches: list) -> None:
        self.batches, self.i = batches, 0

    def __next__(self):
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"i": self.i}


def _accumulation_case(name: str, tmp_path: Path) -> tuple:
    """(system factory, steps of whole batches) for family ``name``: tiny networks, 2 steps of 8 rows.

    The VAEs get width 16: at width 8 their decoder's group norms have one channel per group, which cancels
    the bias before them exactly; that bias's gradient is then pure rounding noise, which Adam scales up to
    steps of +-lr in either run alike, so it could not be compared.
    """
    steps, rows = 2, 8
    if name in ("gpt", "hf-causal-lm"):
        if name == "gpt":
            from genloop.models.transformer import GPTConfig

            vocab = 40
            config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8)

            def make() -> System:
                return models["gpt"](config, DataSpec(vocab_size=vocab))
        else:
            pytest.importorskip("transformers")
            # the tiny local model test_hf_lm builds, in its Llama layout (no dropout, unlike its GPT-2 one)
            from test_hf_lm import _save_model

            from genloop.systems.hf_lm import HFCausalLMConfig

            path = _save_model("llama", tmp_path / "llama")
            vocab = 64  # token ids below every tiny tokenizer's size

            def make() -> System:
                return models["hf-causal-lm"](
                    HFCausalLMConfig(init=str(path), block_size=8), DataSpec(vocab_size=vocab)
                )

        tokens = torch.randint(0, vocab, (steps, rows, 9), generator=torch.Generator().manual_seed(5))
        return make, [(t[:, :-1], t[:, 1:]) for t in tokens]
    gan = {"z_dim": 8, "g_width": 8, "d_width": 8}
    vae = {"z_dim": 4, "width": 16}
    small = {
        "dcgan": gan,
        "wgan-gp": {**gan, "n_critic": 3},
        "cgan": gan,
        "vae": vae,
        "beta-vae": vae,
        "cvae": vae,
        "ddpm": {"width": 8, "channel_mults": [1, 2], "attention_resolutions": [], "num_train_timesteps": 100},
    }[name]
    cls = models[name]
    images = _one_batch(steps * rows).float() / 127.5 - 1
    labels = torch.arange(steps * rows) % 10
    whole = [(images[i * rows : (i + 1) * rows], labels[i * rows : (i + 1) * rows]) for i in range(steps)]
    return (lambda: cls(cls.Config(**small), DataSpec(1, 8, 10))), whole


def _freeze_batch_statistics(system: System) -> None:
    """Batch norm and spectral norm in eval mode: they then use their stored statistics and singular vectors.

    Trained, batch norm normalises by the statistics of the batch it is given (a micro-batch's differ from the
    whole batch's), and spectral norm takes one power-iteration step per forward pass (K micro-batches take
    K); both are real, intended differences of accumulation, not what this test is about. Their weights (the
    batch norms' affine scales and shifts, the normalised convolutions) still train.
    """
    from torch.nn.utils.parametrizations import _SpectralNorm

    for m in system.modules():
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, _SpectralNorm)):
            m.eval()


@pytest.mark.parametrize("name", ["dcgan", "wgan-gp", "cgan", "vae", "beta-vae", "cvae", "ddpm", "gpt", "hf-causal-lm"])
def test_grad_accum_equals_one_larger_batch(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """K micro-batches of B train the same weights as one batch of K*B (fp32, same data, same noise).

    WGAN-GP (3 critic updates per step) is the hard case: each critic update must accumulate its own K
    micro-batches, on the critic as the previous update left it.
    """
    k = 4
    make, whole = _accumulation_case(name, tmp_path)
    one, accumulated = (torch.manual_seed(0) and make() for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), accumulated.state_dict().values()))
    micro = [tuple(part.chunk(k)[i] for part in batch) for batch in whole for i in range(k)]  # rows in order
    cfg = dict(
        models[name].train_defaults,
        steps=len(whole),
        log_every=1,
        precision="fp32",
        device="cpu",
        ema_decay=None,
        sample_every=0,
        checkpoint_every=1000,
        tensorboard=False,
        warmup_steps=0,
    )
    _RowNoise(len(whole[0][0])).install(monkeypatch)
    for system, batches, accum in ((one, whole, 1), (accumulated, micro, k)):
        trainer = Trainer(system, _Stream(batches), TrainConfig(**{**cfg, "grad_accum": accum}), progress=False)
        _freeze_batch_statistics(system)
        trainer.fit()
    for (key, a), b in zip(one.state_dict().items(), accumulated.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=lambda m, key=key: f"{name}: {key} differs: {m}")


# --- determinism and resume -----------------------------------------------------------------------
def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run_dir / "checkpoints" / "last.safetensors")[0]


@pytest.mark.parametrize("name", ["dcgan", "vae"])
def test_same_seed_same_weights(name: str) -> None:
    a = genloop.train(name, overrides=tiny(name), steps=4, seed=3, progress=False)
    b = genloop.train(name, overrides=tiny(name), steps=4, seed=3, progress=False)
    c = genloop.train(name, overrides=tiny(name), steps=4, seed=4, progress=False)
    wa, wb, wc = _weights(a.dir), _weights(b.dir), _weights(c.dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa if not k.startswith("rng/"))
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if k.startswith("model/") and wa[k].is_floating_point())


@pytest.mark.parametrize("name", ["dcgan", "wgan-gp", "vae"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_is_bit_exact(name: str, precision: str) -> None:
    """Stopping at step 3 and resuming to 7 gives the very same weights, EMA, optimizer and RNG state."""
    extra = (f"train.precision={precision}", "data.shift=1")  # augmentation must resume exactly too
    full = genloop.train(name, overrides=tiny(name, *extra), steps=7, progress=False)
    part = genloop.train(name, overrides=tiny(name, *extra), steps=3, progress=False)
    resumed = genloop.resume(part.id, steps=7, progress=False)
    a, b = _weights(full.dir), _weights(resumed.dir)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    assert RunStore().get(resumed.id).info["step"] == 7
    steps = [json.loads(line)["step"] for line in (resumed.dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 8))  # one metric line per step, none lost or repeated across the resume


def test_resume_needs_more_steps() -> None:
    run = genloop.train("vae", overrides=tiny("vae"), steps=2, progress=False)
    with pytest.raises(ConfigError, match="already reached"):
        genloop.resume(run.id, progress=False)


def _dead_pid() -> int:
    """The id of a process that has exited (what a killed run's run.json holds)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(proc.stdout)


def _same_run(a: Path, b: Path) -> None:
    """Two runs hold the very same weights, EMA, optimizer and RNG state, and one metric line per step."""
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, different[:5]
    for run in (a, b):
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, len(steps) + 1)), steps


class _DiesAtStart(Exception):
    pass


def test_a_run_killed_before_it_started_is_killed_and_restarts_from_step_0() -> None:
    """The state train() leaves when its process dies after making the run folder: status 'created', no
    checkpoint, the creator's pid gone. It lists as killed, and resuming trains it from step 0 with its own
    id, seed and config: the run an uninterrupted training makes."""
    overrides = tiny("vae", "train.checkpoint_every=100000")
    made: list = []

    def die(run) -> None:
        made.append(run)
        raise _DiesAtStart

    with pytest.raises(_DiesAtStart):
        genloop.train("vae", overrides=overrides, steps=4, seed=3, progress=False, on_run=die)
    (run,) = made
    info = json.loads((run.dir / "run.json").read_text())
    assert info["status"] == "created" and not run.last_checkpoint.exists()
    info["pid"] = _dead_pid()
    (run.dir / "run.json").write_text(json.dumps(info))
    assert {r.id: r.status for r in RunStore().list()}[run.id] == "killed"  # what `genloop runs list` shows
    resumed = genloop.resume(run.id, progress=False)
    full = genloop.train("vae", overrides=overrides, steps=4, seed=3, progress=False)
    assert resumed.id == run.id and resumed.info["status"] == "finished" and resumed.info["seed"] == 3
    assert resumed.config == {**full.config}
    _same_run(full.dir, resumed.dir)


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(tmp_path: Path) -> None:
    """SIGKILL after some steps but before any checkpoint: `train --resume` trains it again from step 0."""
    proc = _start_training(tmp_path, "train.checkpoint_every=100000", "train.checkpoint_seconds=100000", "train.seed=3")
    runs = tmp_path / "runs"
    _wait_for(lambda: runs.is_dir() and any((d / "metrics.jsonl").exists() for d in runs.iterdir()))
    proc.kill()
    proc.communicate(timeout=30)
    run_dir = _the_run(tmp_path)
    assert not (run_dir / "checkpoints" / "last.safetensors").exists()
    assert RunStore(runs).get(run_dir.name).info["status"] == "killed"
    res = subprocess.run(
        [*GENLOOP, "train", "--resume", run_dir.name, "--steps", "4", "-q"],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == run_dir.name
    full = genloop.train(
        "vae",
        overrides=tiny("vae", "train.checkpoint_every=100000", "train.checkpoint_seconds=100000"),
        steps=4,
        seed=3,
        progress=False,
    )
    _same_run(full.dir, run_dir)


def test_resuming_removes_what_a_killed_save_left() -> None:
    """Temporaries of saves killed mid-write (.NAME.*.tmp) go when the run is next trained; other files stay."""
    run = genloop.train("vae", overrides=tiny("vae"), steps=2, progress=False)
    strays = [
        run.dir / ".model.safetensors.k1ll3d.tmp",
        run.dir / "checkpoints" / ".last.safetensors.x9z.tmp",
        run.dir / ".run.json.abc.tmp",
    ]
    for path in strays:
        path.write_bytes(b"half a file")
    keep = run.dir / "notes.tmp"  # not one of ours
    keep.write_text("mine")
    genloop.resume(run.id, steps=3, progress=False)
    assert not [p for p in strays if p.exists()]
    assert keep.read_text() == "mine"


def _disk_fills(monkeypatch: pytest.MonkeyPatch, name: str, after: int) -> None:
    """Writes of files called ``name`` fail with ENOSPC half-way, from the (after+1)-th on."""
    import errno
    import tempfile

    real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen
    targets: dict[int, str] = {}
    seen = [0]

    def mkstemp(*args, **kw):
        fd, path = real_mkstemp(*args, **kw)
        targets[fd] = Path(path).name
        return fd, path

    class Full:
        def __init__(self, f) -> None:
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

        def write(self, data) -> int:
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd, *args, **kw):
        f = real_fdopen(fd, *args, **kw)
        if targets.pop(fd, "").startswith(f".{name}."):
            seen[0] += 1
            if seen[0] > after:
                return Full(f)
        return f

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fdopen", fdopen)


def test_a_full_disk_stops_training_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ENOSPC while writing a checkpoint: exit 2 with one line naming the file and the run, no temporary
    left, and the previous checkpoint intact and loadable."""
    from conftest import cli

    _disk_fills(monkeypatch, "last.safetensors", after=1)
    sets = [a for s in tiny("vae", "train.checkpoint_every=2") for a in ("--set", s)]
    code, _, err = cli(capsys, "train", "vae", "--steps", "4", "-q", *sets)
    assert code == 2
    (run_dir,) = [d for d in Path(os.environ["GENLOOP_RUNS_DIR"]).iterdir() if d.is_dir()]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"run {run_dir.name}" in lines[0] and str(run_dir / "checkpoints" / "last.safetensors") in lines[0]
    assert "No space left on device" in lines[0] and "checkpoint of step 2 is intact" in lines[0]
    assert load_tensors(run_dir / "checkpoints" / "last.safetensors")[1]["step"] == 2
    assert not list(run_dir.rglob("*.tmp"))


# --- schedule and EMA -----------------------------------------------------------------------------
def test_learning_rate_schedules() -> None:
    cfg = TrainConfig(lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9, 0.0) == pytest.approx(1.0)
    assert learning_rate(cfg, 50, 0.5) == pytest.approx(0.55)
    assert learning_rate(cfg, 100, 1.0) == pytest.approx(0.1)
    lin = TrainConfig(lr=1.0, schedule="linear", min_lr_ratio=0.0)
    assert learning_rate(lin, 5, 0.25) == pytest.approx(0.75)
    assert learning_rate(TrainConfig(lr=0.5), 123, 0.7) == 0.5


def test_ema_is_used_for_inference_weights() -> None:
    run = genloop.train("dcgan", overrides=tiny("dcgan", "train.ema_decay=0.9"), steps=5, progress=False)
    ckpt = _weights(run.dir)
    inference = load_tensors(run.dir / "model.safetensors")[0]
    key = "generator.body.2.weight"  # the last transposed convolution (8 px: one upsampling)
    assert torch.equal(inference[key], ckpt["ema/body.2.weight"])
    assert not torch.equal(inference[key], ckpt[f"model/{key}"])


# --- previews -------------------------------------------------------------------------------------
def test_previews_are_written_by_the_callers_callback() -> None:
    """samples/step-N.png every train.sample_every steps and at the end, written by genloop.generation.preview."""
    from genloop.data.image_io import read_recipe

    run = genloop.train(
        "vae", overrides=tiny("vae", "train.sample_every=2", "train.ema_decay=0.9"), steps=3, progress=False
    )
    written = sorted(p.name for p in (run.dir / "samples").iterdir())
    assert written == ["step-0000002.png", "step-0000003.png"]
    assert read_recipe(run.dir / "samples" / "step-0000002.png") == {"train_step": 2, "seed": 1234, "ema": True}


def test_training_and_systems_do_not_import_generation() -> None:
    """Previews come in through a callback: the engine and the families need nothing from generation/.

    The one exception is diffusion's own ``sample``, a model-side sampling loop (``denoise``) that is part of
    what the model is, not of how previews are written: the DDPM's, its text-conditioned variant's and its
    distilled students'.
    """
    import ast

    root = Path(genloop.__file__).parent
    diffusion = ("systems/ddpm.py", "systems/ddpm_text.py", "systems/ddpm_distill.py")
    allowed = {(path, "genloop.generation.pipelines") for path in diffusion}
    found = set()
    for path in [*root.glob("training/*.py"), *root.glob("systems/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):  # ``from ..generation.io import x`` seen from genloop/training
                package = ["genloop", *path.relative_to(root).parts[:-1]]
                base = package[: len(package) - node.level + 1] if node.level else []
                name = ".".join([*base, *([node.module] if node.module else [])])
            elif isinstance(node, ast.Import):
                name = node.names[0].name
            else:
                continue
            if name.startswith("genloop.generation"):
                found.add((path.relative_to(root).as_posix(), name))
    assert found <= allowed, found - allowed


# --- safety: NaN guard, atomic checkpoints, kill and Ctrl-C ---------------------------------------
class _Exploding(System):
    """A toy family whose loss turns NaN at a given step, to exercise the engine's guard."""

    Config = dict
    ema_target = "net"

    def __init__(self, at: int) -> None:
        super().__init__({}, DataSpec(1, 8))
        self.net, self.at, self.calls = torch.nn.Linear(64, 1), at, 0

    def param_groups(self):
        return {"model": list(self.net.parameters())}

    def training_step(self, opt):
        self.calls += 1
        return opt.step("model", self._loss)

    def _loss(self, batch):
        loss = self.net(batch[0].flatten(1)).pow(2).mean()
        return {"loss": loss * float("nan") if self.calls >= self.at else loss}


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    system = _Exploding(at=4)
    trainer = Trainer(
        system,
        ImageBatches(_one_batch(32), None, 16),
        _cfg("vae", steps=10, checkpoint_every=2),
        tmp_path,
        progress=False,
    )
    with pytest.raises(TrainingDiverged, match=r"became nan at step 4.*step 2"):
        trainer.fit()
    tensors, state = load_tensors(tmp_path / "checkpoints" / "last.safetensors")
    assert state["step"] == 2
    assert torch.isfinite(tensors["model/net.weight"]).all()
    assert torch.isfinite(system.net.weight).all()  # the bad step never reached the weights


def test_checkpoint_survives_a_kill_during_save(tmp_path: Path) -> None:
    """SIGKILL in the middle of writing a checkpoint leaves the previous one intact and loadable."""
    script = f"""
import os, signal, torch
from genloop.serialization import save_tensors
path = {str(tmp_path / "last.safetensors")!r}
save_tensors(path, {{"w": torch.ones(1000)}}, {{"step": 1}})
real_replace = os.replace
def killed(src, dst):
    assert os.path.getsize(src) > 0   # the new file is fully written to its temporary name...
    os.kill(os.getpid(), signal.SIGKILL)  # ...and the process dies before the rename
os.replace = killed
save_tensors(path, {{"w": torch.zeros(1000)}}, {{"step": 2}})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    tensors, state = load_tensors(tmp_path / "last.safetensors")
    assert state == {"step": 1} and torch.equal(tensors["w"], torch.ones(1000))


def _start_training(tmp_path: Path, *extra: str) -> subprocess.Popen:
    args = [*GENLOOP, "train", "vae", "--steps", "100000", "-q"]
    for s in tiny("vae", "train.checkpoint_every=5", *extra):
        args += ["--set", s]
    return subprocess.Popen(args, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float = 90.0) -> None:
    t0 = time.time()
    while not predicate():
        if time.time() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.1)


def _the_run(tmp_path: Path) -> Path:
    runs = [d for d in (tmp_path / "runs").iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_continues(tmp_path: Path) -> None:
    proc = _start_training(tmp_path)
    _wait_for(
        lambda: (
            (tmp_path / "runs").is_dir() and any((d / "metrics.jsonl").exists() for d in (tmp_path / "runs").iterdir())
        )
    )
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "resume" in stderr.lower()
    run_dir = _the_run(tmp_path)
    assert stdout.strip().splitlines()[-1] == run_dir.name
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted" and info["step"] > 0
    stopped_at = load_tensors(run_dir / "checkpoints" / "last.safetensors")[1]["step"]
    assert stopped_at == info["step"]
    res = subprocess.run(
        [*GENLOOP, "train", "--resume", run_dir.name, "--steps", str(stopped_at + 3), "-q"],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads((run_dir / "run.json").read_text())["step"] == stopped_at + 3


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    proc = _start_training(tmp_path, "train.checkpoint_every=3")
    _wait_for(
        lambda: (
            (tmp_path / "runs").is_dir()
            and any((d / "checkpoints" / "last.safetensors").exists() for d in (tmp_path / "runs").iterdir())
        )
    )
    time.sleep(0.3)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.communicate(timeout=30)
    run_dir = _the_run(tmp_path)
    saved = load_tensors(run_dir / "checkpoints" / "last.safetensors")[1]["step"]
    assert saved % 3 == 0 and saved > 0
    assert RunStore(tmp_path / "runs").get(run_dir.name).info["status"] == "killed"  # not "running" forever
    res = subprocess.run(
        [*GENLOOP, "train", "--resume", run_dir.name, "--steps", str(saved + 2), "-q"],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
