"""hf-causal-lm: a local Hugging Face causal LM fine-tuned in full or with LoRA, on tiny random models.

The models are built here (GPT-2 and Llama layouts, a few thousand parameters, with a byte-level BPE
tokenizer trained on a few sentences) and saved with ``save_pretrained``, so every test goes through the
real loading path with no model hub.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from genloop.errors import ConfigError, NotFoundError
from genloop.generation.text_sampling import SamplingParams, generate_text
from genloop.modalities.text import load_tokenizer
from genloop.serialization import load_tensors, save_tensors
from genloop.systems.base import DataSpec
from genloop.systems.hf_lm import HFCausalLMConfig, HFCausalLMSystem
from genloop.training.config import TrainConfig
from genloop.training.engine import Trainer

SENTENCES = [
    "hello world, this is a tiny corpus for a tiny model.",
    "the quick brown fox jumps over the lazy dog.",
    "hello again, world! the fox says hello.",
    "def add(a, b):\n    return a + b\n",
] * 4
EOT = "<|endoftext|>"


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOT], show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(SENTENCES, trainer)
    return tok


def _save_model(kind: str, path: Path, sharp: bool = False) -> Path:
    """A tiny random ``kind`` model in ``path``; ``sharp``: logits on a pretrained model's scale.

    At GPT-2's initialisation the output logits stay within about +-0.6 whatever the layers below do
    (a unit-gain final norm times N(0, 0.02) embeddings), so LoRA, which freezes both, could barely move
    the loss of a random model. A pretrained model's final norm has large gains; ``sharp`` sets it to 10.
    """
    import transformers

    tok = _tokenizer()
    vocab, eot = tok.get_vocab_size(), tok.token_to_id(EOT)
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(
            n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=vocab, bos_token_id=eot, eos_token_id=eot
        )
        model = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            vocab_size=vocab,
            bos_token_id=eot,
            eos_token_id=eot,
            pad_token_id=None,
        )
        model = transformers.LlamaForCausalLM(cfg)
    if sharp:
        with torch.no_grad():
            (model.transformer.ln_f if kind == "gpt2" else model.model.norm).weight.fill_(10.0)
    model.save_pretrained(path)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-models")
    dirs = {kind: _save_model(kind, root / kind) for kind in ("gpt2", "llama")}
    dirs.update({f"{kind}-sharp": _save_model(kind, root / f"{kind}-sharp", sharp=True) for kind in ("gpt2", "llama")})
    return dirs


def _hf_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def _genloop_tokenizer(path: Path):
    """GenLoop's wrapper of the model's tokenizer (what the data is encoded with)."""
    return load_tokenizer(HFCausalLMSystem.tokenizer_source(HFCausalLMConfig(init=str(path))))


def _system(path: Path, **kw) -> HFCausalLMSystem:
    vocab = len(_hf_tokenizer(path))
    return HFCausalLMSystem(HFCausalLMConfig(init=str(path), **kw), DataSpec(vocab_size=vocab))


class RepeatingBatches:
    """(x, y) windows of a repeating token stream at random offsets; resumable like the real text batches."""

    def __init__(self, stream: torch.Tensor, batch_size: int, block: int, seed: int = 0) -> None:
        self.stream, self.batch_size, self.block = stream, batch_size, block
        self.device = torch.device("cpu")
        self.generator = torch.Generator().manual_seed(seed)
        self.seed, self.drawn = seed, 0

    def __iter__(self) -> RepeatingBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(self.stream) - self.block - 1, (self.batch_size,), generator=self.generator)
        rows = torch.stack([self.stream[s : s + self.block + 1] for s in starts.tolist()])
        self.drawn += 1
        return rows[:, :-1].to(self.device), rows[:, 1:].to(self.device)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "drawn": self.drawn}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.__init__(self.stream, self.batch_size, self.block, state["seed"])
        for _ in range(state["drawn"]):
            next(self)


def _stream(path: Path) -> torch.Tensor:
    tok = _hf_tokenizer(path)
    ids = tok.encode("the quick brown fox jumps over the lazy dog. hello world! ")
    return torch.tensor(ids * 40, dtype=torch.long)


def _train_cfg(steps: int, lr: float) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=8,
        precision="fp32",
        tensorboard=False,
        ema_decay=None,
        threads=1,
        lr=lr,
        sample_every=0,
        log_every=1,
        device="cpu",
        checkpoint_every=1000,
    )


# --- loading and errors ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind,block", [("gpt2", 64), ("llama", 256)])
def test_loads_a_local_model_directory(model_dirs: dict[str, Path], kind: str, block: int) -> None:
    system = _system(model_dirs[kind])
    assert system.block_size == block  # min(the model's positions, 256)
    assert system.causal_lm().block_size == block
    assert HFCausalLMSystem.tokenizer_source(system.config) == str(model_dirs[kind])
    assert system.modality == "text" and system.ema_target == "net"
    counts = system.parameter_counts()
    assert counts["trainable"] == counts["total"] > 0
    assert "full fine-tuning" in system.parameter_summary()
    assert _system(model_dirs[kind], block_size=32).block_size == 32


def test_config_and_loading_errors(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.init: give the path to a local Hugging Face model directory"):
        HFCausalLMConfig()
    for bad in ({"lora_r": 0}, {"lora_dropout": 1.0}, {"block_size": -1}, {"lora_targets": "c_attn"}):
        with pytest.raises(ConfigError):
            HFCausalLMConfig(init="x", **bad)
    spec = DataSpec(vocab_size=100)
    with pytest.raises(NotFoundError, match="does not exist"):
        HFCausalLMSystem(HFCausalLMConfig(init=str(tmp_path / "nope")), spec)
    with pytest.raises(NotFoundError, match="does not exist"):
        HFCausalLMSystem.tokenizer_source(HFCausalLMConfig(init=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="no config.json"):
        HFCausalLMSystem(HFCausalLMConfig(init=str(tmp_path / "empty")), spec)
    from transformers import ResNetConfig

    ResNetConfig().save_pretrained(tmp_path / "resnet")
    with pytest.raises(ConfigError, match="not a causal language model"):
        HFCausalLMSystem(HFCausalLMConfig(init=str(tmp_path / "resnet")), spec)
    gpt2 = model_dirs["gpt2"]
    with pytest.raises(ConfigError, match="is a file"):
        HFCausalLMSystem(HFCausalLMConfig(init=str(gpt2 / "config.json")), spec)
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text((gpt2 / "config.json").read_text())
    with pytest.raises(ConfigError, match="cannot load the model"):
        HFCausalLMSystem(HFCausalLMConfig(init=str(tmp_path / "no-weights")), spec)
    with pytest.raises(ConfigError, match="embeds only"):
        HFCausalLMSystem(HFCausalLMConfig(init=str(gpt2)), DataSpec(vocab_size=10_000))
    with pytest.raises(ConfigError, match="trains on text"):
        HFCausalLMSystem(HFCausalLMConfig(init=str(gpt2)), DataSpec(channels=3, image_size=8))
    with pytest.raises(ConfigError, match="exceeds the model's context of 64"):
        _system(gpt2, block_size=65)
    with pytest.raises(ConfigError, match="name no layer.*c_attn"):
        _system(gpt2, lora=True, lora_targets=["q_proj"])


# --- the adapter the sampler drives ---------------------------------------------------------------
@pytest.mark.parametrize("kind,lora", [("gpt2", False), ("gpt2", True), ("llama", False)])
def test_cached_logits_equal_full_forward(model_dirs: dict[str, Path], kind: str, lora: bool) -> None:
    system = _system(model_dirs[kind], lora=lora).eval()
    lm = system.causal_lm()
    idx = torch.randint(0, system.spec.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = lm(idx)
        cache = lm.new_cache(2)
        parts = [lm(idx[:, :7], cache=cache)]  # prefill
        parts += [lm(idx[:, t : t + 1], cache=cache) for t in range(7, 16)]  # one token at a time
        parts.append(lm(idx[:, 16:], cache=cache))  # a chunk after single steps
    assert full.dtype == torch.float32 and full.shape == (2, 20, system.hf_config.vocab_size)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-4, rtol=0)
    assert next(lm.parameters()).device.type == "cpu"  # how the sampler finds the device


def test_loss_is_mean_cross_entropy_ignoring_minus_one(model_dirs: dict[str, Path]) -> None:
    system = _system(model_dirs["gpt2"]).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, system.spec.vocab_size, (2, 12), generator=g)
    y = torch.randint(0, system.spec.vocab_size, (2, 12), generator=g)
    with torch.no_grad():
        loss = system.loss(x, y)
        assert abs(float(loss) - math.log(system.spec.vocab_size)) < 0.5  # near-uniform at initialisation
        y_masked = y.clone()
        y_masked[:, 6:] = -1
        logits = system.causal_lm()(x)[:, :6]
        expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[:, :6].reshape(-1))
        torch.testing.assert_close(system.loss(x, y_masked), expected)


# --- training with the real engine, and the state dict ---------------------------------------------
def _logits(system: HFCausalLMSystem, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return system.eval().causal_lm()(x)


@pytest.mark.parametrize(
    "kind,lora,lr", [("gpt2", False, 3e-3), ("gpt2-sharp", True, 1e-2), ("llama-sharp", True, 1e-2)]
)
def test_fine_tuning_lowers_the_loss_and_round_trips(
    model_dirs: dict[str, Path], tmp_path: Path, kind: str, lora: bool, lr: float
) -> None:
    path = model_dirs[kind]
    torch.manual_seed(0)
    system = _system(path, lora=lora, block_size=16)
    stream = _stream(path)
    probe = RepeatingBatches(stream, 8, 16, seed=99)
    x, y = next(probe)
    with torch.no_grad():
        before = float(system.eval().loss(x, y))
    frozen = {k: v.clone() for k, v in system.state_dict().items() if "lora_" not in k}

    if lora:
        counts = system.parameter_counts()
        assert 0 < counts["trainable"] < 0.2 * counts["total"]
        trainable = {n for n, p in system.named_parameters() if p.requires_grad}
        assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
        optimized = {id(p) for g in system.param_groups()["model"] for p in g["params"]}
        assert optimized == {id(p) for p in system.trainable_parameters()}
        assert "LoRA r=8 on" in system.parameter_summary()

    run_dir = tmp_path / "run"
    run_dir.mkdir()  # the run store makes it in real use
    result = Trainer(system, RepeatingBatches(stream, 8, 16), _train_cfg(40, lr), run_dir=run_dir, progress=False).fit()
    assert result.step == 40
    with torch.no_grad():
        after = float(system.eval().loss(x, y))
    assert after < 0.75 * before, (before, after)
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-5:]) < sum(losses[:5])

    state = system.state_dict()
    if lora:  # the base weights did not move; only the adapters did
        for k, v in frozen.items():
            assert torch.equal(state[k], v), k
        assert any(float(v.abs().max()) > 0 for k, v in state.items() if "lora_B" in k)  # B starts at zero
    else:
        assert any(not torch.equal(state[k], v) for k, v in frozen.items())

    # a fresh system with the same config + the saved weights (the engine's real file) gives the same logits
    tensors, meta = load_tensors(run_dir / "model.safetensors")
    assert meta["step"] == 40
    fresh = _system(path, lora=lora, block_size=16)
    assert set(fresh.state_dict()) == set(tensors)
    fresh.load_state_dict(tensors)
    assert torch.equal(_logits(fresh, x), _logits(system, x))
    # and through save_tensors directly (shared, tied tensors included)
    save_tensors(tmp_path / "again.safetensors", system.state_dict())
    again = _system(path, lora=lora, block_size=16)
    again.load_state_dict(load_tensors(tmp_path / "again.safetensors")[0])
    assert torch.equal(_logits(again, x), _logits(system, x))


def test_sampling_during_training_uses_the_adapter(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """The engine's end-of-run samples go through the shared sampler and the HF cache (past block_size)."""
    path = model_dirs["gpt2"]
    system = _system(path, block_size=16)
    system.tokenizer = _genloop_tokenizer(path)
    assert system.tokenizer.vocab_size == system.spec.vocab_size
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # the run store makes it in real use
    from genloop.generation.preview import preview_writer

    Trainer(
        system,
        RepeatingBatches(_stream(path), 4, 16),
        _train_cfg(2, 1e-3),
        run_dir=run_dir,
        progress=False,
        preview=preview_writer(run_dir, ema=False),
    ).fit()
    (sample_file,) = (run_dir / "samples").glob("step-*.txt")
    assert sample_file.read_text().count("-----") == 3  # four continuations


def test_generate_text_same_with_and_without_cache(model_dirs: dict[str, Path]) -> None:
    for kind in ("gpt2", "llama"):
        path = model_dirs[kind]
        system = _system(path, block_size=8).eval()  # a short context, so the window slides
        tok = _genloop_tokenizer(path)
        lm = system.causal_lm()
        texts = {}
        for use_cache in (True, False):
            params = SamplingParams(max_tokens=20, temperature=0, stop_at_eot=False)
            texts[use_cache] = generate_text(
                lm, tok.encode, tok.decode, "hello", params, seed=0, eot_id=tok.eot_id, use_cache=use_cache
            )
        assert texts[True] == texts[False]
        sampled = {}
        for use_cache in (True, False):
            params = SamplingParams(max_tokens=12, temperature=1.0, stop_at_eot=False)
            sampled[use_cache] = generate_text(
                lm, tok.encode, tok.decode, "the fox", params, seed=3, n=2, use_cache=use_cache
            )
        assert sampled[True] == sampled[False]


def test_lora_targets_default_and_fallback(model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """peft's default layers for a known architecture; every linear layer but the output one otherwise."""
    assert _system(model_dirs["llama"], lora=True).lora_targets == ["q_proj", "v_proj"]
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

    monkeypatch.delitem(defaults, "llama")  # as for an architecture peft has no default for
    system = _system(model_dirs["llama"], lora=True)
    assert system.lora_targets == "all-linear"
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in system.named_parameters() if ".lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert "all-linear" in system.parameter_summary()


def _main(*args: str) -> int:
    """`genloop ARGS` in-process, its exit code (Typer exits through SystemExit)."""
    from genloop.cli.main import main

    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


@pytest.mark.parametrize("lora", [False, True])
def test_cli_fine_tunes_generates_and_evaluates(
    model_dirs: dict[str, Path], tmp_path: Path, lora: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """`genloop train hf-causal-lm --init DIR --data FILE` end to end: the real loading path, the model's own
    tokenizer for the data, the run's saved tokenizer for generation, and the same sampler controls."""
    import genloop

    corpus = tmp_path / "notes.txt"
    corpus.write_text("\n".join(SENTENCES * 6), encoding="utf-8")
    args = [
        "train",
        "hf-causal-lm",
        "--init",
        str(model_dirs["gpt2-sharp"]),
        "--data",
        str(corpus),
        "--steps",
        "12",
        "-q",
        "--set",
        "train.batch_size=4",
        "--set",
        "model.block_size=32",
        "--set",
        "train.precision=fp32",
        "--set",
        "train.tensorboard=false",
        "--set",
        "train.warmup_steps=0",
        "--set",
        f"model.lora={str(lora).lower()}",
    ]
    capsys.readouterr()
    assert _main(*args) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    run = genloop.api.RunStore().get(run_id)
    assert run.info["status"] == "finished" and (run.dir / "tokenizer").is_dir()
    pipe = genloop.load(run_id)
    assert pipe.tokenizer.kind == "hf"
    a = pipe(prompt="hello", max_tokens=8, temperature=0.9, top_k=20, top_p=0.9, seed=3).text
    assert a == pipe(prompt="hello", max_tokens=8, temperature=0.9, top_k=20, top_p=0.9, seed=3).text
    assert _main("generate", run_id, "--prompt", "hello", "--max-tokens", "6", "--temperature", "0") == 0
    assert capsys.readouterr().out.startswith("hello")
    r = genloop.evaluate(run_id, n=3)
    assert r["tokenizer"] == "hf" and r["val_loss"] > 0


def test_cli_init_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "notes.txt"
    corpus.write_text("hello world\n" * 50, encoding="utf-8")
    assert _main("train", "hf-causal-lm", "--data", corpus, "--steps", "1") == 2
    assert "--init" in capsys.readouterr().err
    assert _main("train", "hf-causal-lm", "--init", tmp_path / "nope", "--data", corpus, "--steps", "1") == 2
    assert "nope" in capsys.readouterr().err
