"""Fine-tuning a local pretrained Hugging Face causal language model (``genloop train hf-causal-lm --init PATH``).

``model.init`` is a local model directory as ``save_pretrained`` writes it (``config.json``, the weights and
the tokenizer files); nothing is downloaded. The data is encoded with that model's own tokenizer
(:meth:`HFCausalLMSystem.tokenizer_source`), and training is the shared engine's, as for GenLoop's GPT.

Two ways to train:

- **full** (``model.lora=false``): every weight of the model trains.
- **LoRA** (``model.lora=true``): peft adds low-rank adapters (rank ``lora_r``, scale ``lora_alpha / lora_r``)
  to the layers named in ``lora_targets`` and freezes the base weights; only the adapters (a small share of
  the parameters) train. With ``lora_targets`` empty, the layers are peft's default for the architecture
  (GPT-2: ``c_attn``; Llama: ``q_proj``, ``v_proj``), or, for an architecture peft has no default for,
  every linear (``Linear`` / GPT-2-style ``Conv1D``) layer but the output layer (peft's ``all-linear``).

Checkpoints hold the whole system state dict (for LoRA: the frozen base weights under peft's
``base_model.model.`` prefix, plus the adapters), so a run loads without the original directory's weights
changing under it. The model's own dropout settings apply during training (GPT-2's are 0.1).

The sampler drives :meth:`HFCausalLMSystem.causal_lm`: ``block_size``, ``new_cache(batch)`` (the model's
KV cache, a ``DynamicCache``) and ``lm(idx, cache=None)`` -> float32 logits over the model's whole
vocabulary (``config.vocab_size`` rows, which may exceed the tokenizer's when the embedding is padded).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError, NotFoundError
from .base import DataSpec
from .lm import LanguageModelSystem

DEFAULT_BLOCK = 256  # training windows when block_size=0 and the model allows more


@dataclass
class HFCausalLMConfig:
    name: str = "hf-causal-lm"
    init: str = ""  # a local Hugging Face model directory (config.json + weights + tokenizer files)
    lora: bool = False  # False: full fine-tuning; True: LoRA adapters (peft), base weights frozen
    lora_r: int = 8  # adapter rank
    lora_alpha: int = 16  # adapter scale is lora_alpha / lora_r
    lora_dropout: float = 0.0  # dropout on the adapters' input
    # module names to adapt; empty: peft's default for the architecture, else every linear layer but the output
    lora_targets: list[str] = field(default_factory=list)
    block_size: int = 0  # context of training windows and generation; 0: min(the model's max positions, 256)

    def __post_init__(self) -> None:
        if not isinstance(self.init, str) or not self.init.strip():
            raise ConfigError(
                "model.init: give the path to a local Hugging Face model directory "
                "(genloop train hf-causal-lm --init PATH)"
            )
        if self.lora_r < 1:
            raise ConfigError(f"model.lora_r must be >= 1, got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise ConfigError(f"model.lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"model.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if isinstance(self.lora_targets, str) or not all(isinstance(t, str) and t for t in self.lora_targets):
            raise ConfigError(f"model.lora_targets must be a list of module names, got {self.lora_targets!r}")
        if self.block_size < 0:
            raise ConfigError(
                f"model.block_size must be >= 0 (0: the model's context, at most {DEFAULT_BLOCK}), "
                f"got {self.block_size}"
            )


def check_model_dir(init: str) -> Path:
    """The model directory of ``model.init``, or a one-line error if it is not one."""
    path = Path(init).expanduser()
    if not path.exists():
        raise NotFoundError(
            f"model.init: {path} does not exist; give a local Hugging Face model directory "
            "(one written by save_pretrained, with config.json)"
        )
    if not path.is_dir():
        raise ConfigError(f"model.init: {path} is a file; give the Hugging Face model directory that holds it")
    if not (path / "config.json").is_file():
        raise NotFoundError(f"model.init: {path} has no config.json; it is not a Hugging Face model directory")
    return path


def _max_positions(config: Any) -> int | None:
    """The longest context the model was built for, if its config says."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_sequence_length"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _load_model(path: Path) -> torch.nn.Module:
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        hf_config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, KeyError, OSError) as e:
        raise ConfigError(
            f"model.init: {path}/config.json is not a usable Hugging Face config ({_first_line(e)})"
        ) from None
    not_causal = (
        f"model.init: {path} holds a '{getattr(hf_config, 'model_type', '?')}' model, which is not a causal "
        "language model (hf-causal-lm fine-tunes decoders such as GPT-2, Llama, Qwen)"
    )
    mapping = getattr(AutoModelForCausalLM, "_model_mapping", None)  # config class -> causal LM class
    if mapping is not None and type(hf_config) not in mapping:
        raise ConfigError(not_causal)
    from ..serialization import warn_if_pickle_folder

    warn_if_pickle_folder(path)  # transformers reads a .bin with torch.load(weights_only=True)
    major = int(transformers.__version__.split(".")[0])
    dtype_key = "dtype" if major >= 5 else "torch_dtype"  # transformers 5 renamed torch_dtype to dtype
    try:
        with _quiet_loading():
            return AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, **{dtype_key: torch.float32})
    except (OSError, ValueError, KeyError) as e:
        if "Unrecognized configuration class" in str(e):
            raise ConfigError(not_causal) from None
        raise ConfigError(f"model.init: cannot load the model in {path} ({_first_line(e)})") from None


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No 'Loading weights' progress bar (transformers 5 draws one per load); restored afterwards."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _lora_targets(model: torch.nn.Module, config: HFCausalLMConfig) -> list[str] | str:
    """The module names LoRA adapts: the config's, else peft's default for the architecture, else all-linear."""
    if config.lora_targets:
        return list(config.lora_targets)
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS
    except ImportError:  # older peft keeps the table elsewhere
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS
    model_type = getattr(model.config, "model_type", None)
    default = DEFAULTS.get(model_type)
    return list(default) if default else "all-linear"


def _matches(name: str, targets: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _wrap_lora(model: torch.nn.Module, config: HFCausalLMConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    targets = _lora_targets(model, config)
    if isinstance(targets, list):
        matched = [m for n, m in model.named_modules() if _matches(n, targets)]
        if not matched:
            layers = sorted(
                {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}
            )
            raise ConfigError(
                f"model.lora_targets {targets} name no layer of this model; its linear layers: {', '.join(layers)}"
            )
        # GPT-2-style Conv1D stores its weight transposed (in, out): peft must be told, per model
        fan_in_fan_out = all(isinstance(m, Conv1D) for m in matched)
    else:
        fan_in_fan_out = False  # all-linear: peft sets it per layer (Conv1D layers get True)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():  # peft 0.21 calls a transformers 5 deprecated property while wrapping
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, lora)
    except ValueError as e:
        raise ConfigError(f"model.lora_targets: peft cannot adapt {targets} ({_first_line(e)})") from None


class HFCausalLM:
    """What the sampler and the evaluator drive: ``block_size``, ``new_cache(batch)``, ``lm(idx, cache=None)``.

    With a cache, ``idx`` holds only the tokens the cache has not seen yet; the model places them after the
    cached ones (positions count from the cache's length), so prefill + one token at a time gives the
    logits of one full forward pass.
    """

    def __init__(self, net: torch.nn.Module, hf_config: Any, block_size: int) -> None:
        self.net, self.hf_config, self.block_size = net, hf_config, int(block_size)

    def parameters(self) -> Any:  # the sampler finds the model's device through these
        return self.net.parameters()

    def new_cache(self, batch_size: int) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.hf_config)  # per-layer kinds (sliding-window layers) from the config
        except TypeError:  # transformers before 4.56
            return DynamicCache()

    def __call__(self, idx: torch.Tensor, cache: Any = None) -> torch.Tensor:
        if cache is None:
            out = self.net(input_ids=idx, use_cache=False)
        else:
            out = self.net(input_ids=idx, past_key_values=cache, use_cache=True)
        return out.logits.float()


class HFCausalLMSystem(LanguageModelSystem):
    """A local pretrained Hugging Face causal LM, fine-tuned in full or with LoRA adapters."""

    Config = HFCausalLMConfig

    def __init__(self, config: HFCausalLMConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        path = check_model_dir(config.init)
        model = _load_model(path)
        self.hf_config = model.config
        vocab = model.get_input_embeddings().weight.shape[0]
        if spec.vocab_size < 2:
            raise ConfigError(
                "model 'hf-causal-lm' trains on text: use a text corpus (--data pydoc, a .txt, a folder or a .jsonl)"
            )
        if spec.vocab_size > vocab:
            raise ConfigError(
                f"the tokenizer has {spec.vocab_size} tokens but the model in {path} embeds only {vocab}; "
                "encode the data with the model's own tokenizer (the one in its directory)"
            )
        limit = _max_positions(model.config)
        if config.block_size and limit is not None and config.block_size > limit:
            raise ConfigError(f"model.block_size={config.block_size} exceeds the model's context of {limit} positions")
        self._block_size = config.block_size or min(limit or DEFAULT_BLOCK, DEFAULT_BLOCK)
        self.lora_targets = _lora_targets(model, config) if config.lora else None
        self.net = _wrap_lora(model, config) if config.lora else model

    @classmethod
    def tokenizer_source(cls, config: HFCausalLMConfig) -> str:
        """The model's directory: the data is encoded with the model's own tokenizer."""
        check_model_dir(config.init)
        return config.init

    def causal_lm(self) -> HFCausalLM:
        return HFCausalLM(self.net, self.hf_config, self._block_size)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the targets ``y`` (B, T); targets of -1 are ignored."""
        logits = self.net(input_ids=x, use_cache=False).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1)

    # --- what trains ---------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates: all of them for full fine-tuning, the adapters for LoRA."""
        seen: set[int] = set()
        return [p for p in self.parameters() if p.requires_grad and not (id(p) in seen or seen.add(id(p)))]

    def parameter_counts(self) -> dict[str, int]:
        """``{"trainable": n, "total": n}``, each shared (tied) tensor counted once."""
        unique = {id(p): p for p in self.parameters()}.values()
        return {"trainable": sum(p.numel() for p in unique if p.requires_grad), "total": sum(p.numel() for p in unique)}

    def parameter_summary(self) -> str:
        """One line for logs, e.g. ``LoRA r=8 on c_attn: 147,456 of 124,587,264 parameters train (0.12%)``."""
        c = self.parameter_counts()
        share = 100.0 * c["trainable"] / max(c["total"], 1)
        if self.config.lora:
            targets = ", ".join(self.lora_targets) if isinstance(self.lora_targets, list) else self.lora_targets
            how = f"LoRA r={self.config.lora_r} on {targets}"
        else:
            how = "full fine-tuning"
        return f"{how}: {c['trainable']:,} of {c['total']:,} parameters train ({share:.2f}%)"


__all__ = ["HFCausalLMConfig", "HFCausalLMSystem", "HFCausalLM", "check_model_dir"]
