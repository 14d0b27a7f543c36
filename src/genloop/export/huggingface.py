"""A ``gpt`` run as a Hugging Face GPT-2 folder: ``AutoModelForCausalLM.from_pretrained(folder)`` and
``AutoTokenizer.from_pretrained(folder)`` load it, and its logits equal GenLoop's.

Why GPT-2 maps exactly (checked against :mod:`genloop.models.transformer` and ``GPT2LMHeadModel``):

- same layout: token + learned absolute position embeddings, pre-norm blocks (``ln_1`` -> attention,
  ``ln_2`` -> MLP), a final ``ln_f``, an output head tied to the token embedding (``tie_word_embeddings``);
- attention: one fused q/k/v projection split in that order, heads of ``n_embd / n_head``, scores scaled by
  ``1 / sqrt(head_dim)`` (GPT-2's ``scale_attn_weights``; no per-layer scaling, no upcast reordering);
- MLP 4x wide with the exact (erf) GELU: GPT-2's default ``gelu_new`` is the tanh approximation, so the
  config says ``activation_function="gelu"``, which transformers maps to the exact one;
- LayerNorm epsilon 1e-5 on both sides;
- GPT-2's linear layers are ``Conv1D`` (weight stored input x output): every matrix is transposed;
- ``model.bias=false`` runs have no biases in linears and LayerNorms; GPT-2 always has them, so they are
  written as zeros (a zero bias adds nothing; a LayerNorm without bias is one with bias 0).

Nothing in a ``gpt`` run is left without a GPT-2 counterpart, so no configuration is refused for the
architecture; runs of other families are refused (``hf-causal-lm`` is a transformers model already; a
``music-gpt`` has a music tokenizer no text tool reads).

The tokenizer: a byte-level BPE run's ``tokenizers`` file is saved as it is; a char run's vocabulary becomes a
``tokenizers`` word-level model over single characters (unknown characters -> ``<unk>``, as in GenLoop); an
``hf`` tokenizer is saved by transformers itself. Two documented differences: a literal ``<|endoftext|>`` in
the text is one special token for transformers (GenLoop encodes it as ordinary text), and GenLoop's sampler never
samples a char model's ``<unk>`` while a transformers ``generate`` may.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..generation.pipelines import load_system
from ..models.transformer import GPT

EXPORT_FORMAT = "genloop-gpt2-export"


def _refuse_family(run: Any, system: Any) -> None:
    from ..modalities.text.tokenizers import Tokenizer
    from ..systems.lm import GPTSystem

    net = getattr(system, "net", None)
    if not isinstance(system, GPTSystem) or not isinstance(net, GPT):
        raise ConfigError(f"--format transformers exports gpt runs; run {run.id} is a {run.info.get('model')} run")
    if not isinstance(system.tokenizer, Tokenizer):
        raise ConfigError(
            f"--format transformers exports text gpt runs; run {run.id}'s tokenizer "
            f"({type(system.tokenizer).__name__}) is not a text tokenizer transformers can load"
        )


def gpt2_config(net: GPT, eot_id: int) -> Any:
    """The ``GPT2Config`` of a GenLoop GPT (see the module docstring for why each field is what it is)."""
    from transformers import GPT2Config

    cfg = net.cfg
    return GPT2Config(
        vocab_size=net.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=4 * cfg.n_embd,
        activation_function="gelu",
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        layer_norm_epsilon=1e-5,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        tie_word_embeddings=True,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
    )


def gpt2_state_dict(net: GPT) -> dict[str, torch.Tensor]:
    """GenLoop GPT weights under GPT2LMHeadModel's names and layouts (Conv1D: transposed; no bias: zeros)."""

    def bias(layer: torch.nn.Module, size: int) -> torch.Tensor:
        b = getattr(layer, "bias", None)
        return b.detach().clone() if b is not None else torch.zeros(size)

    sd: dict[str, torch.Tensor] = {
        "transformer.wte.weight": net.wte.weight.detach().clone(),
        "transformer.wpe.weight": net.wpe.weight.detach().clone(),
    }
    n = net.cfg.n_embd
    for i, block in enumerate(net.blocks):
        h = f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            layer = getattr(block, ln)
            sd[h + ln + ".weight"] = layer.weight.detach().clone()
            sd[h + ln + ".bias"] = bias(layer, n)
        for name, layer in (
            ("attn.c_attn", block.attn.c_attn),
            ("attn.c_proj", block.attn.c_proj),
            ("mlp.c_fc", block.mlp.c_fc),
            ("mlp.c_proj", block.mlp.c_proj),
        ):
            sd[h + name + ".weight"] = layer.weight.detach().t().contiguous()
            sd[h + name + ".bias"] = bias(layer, layer.out_features)
    sd["transformer.ln_f.weight"] = net.ln_f.weight.detach().clone()
    sd["transformer.ln_f.bias"] = bias(net.ln_f, n)
    return {k: v.float() for k, v in sd.items()}


def _char_backend(tok: Any) -> Any:
    """A ``tokenizers`` tokenizer that encodes exactly as a GenLoop char tokenizer: one id per character."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    from ..modalities.text.tokenizers import EOT, UNK

    vocab = {c: i for i, c in enumerate(tok.chars)}
    vocab[EOT], vocab[UNK] = tok.eot_id, tok.unk_id
    backend = Backend(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character alone
    backend.decoder = decoders.Fuse()  # joined back without spaces
    backend.add_special_tokens([AddedToken(EOT, special=True), AddedToken(UNK, special=True)])
    return backend


def save_tokenizer(tok: Any, folder: Path, block_size: int) -> None:
    """``tok`` (a GenLoop text tokenizer) as files ``AutoTokenizer.from_pretrained(folder)`` loads."""
    from transformers import PreTrainedTokenizerFast

    from ..modalities.text.tokenizers import EOT, UNK

    if tok.kind == "hf":
        tok.hf_tokenizer.save_pretrained(str(folder))
        return
    if tok.kind == "char":
        backend, specials = _char_backend(tok), {"unk_token": UNK}
    elif tok.kind == "bpe":
        from tokenizers import Tokenizer as Backend

        backend, specials = Backend.from_str(tok._backend.to_str()), {}
    else:
        raise ConfigError(f"--format transformers: no transformers form for a {tok.kind!r} tokenizer")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOT,
        bos_token=EOT,
        model_max_length=block_size,
        clean_up_tokenization_spaces=False,  # GenLoop's text is exactly what was decoded: no space clean-up
        **specials,
    )
    fast.save_pretrained(str(folder))


def export_transformers(run: Any, out: Path, checkpoint: str = "last") -> Path:
    """Write ``run`` (a gpt run) to ``out`` as a GPT-2 model folder with its tokenizer; returns ``out``.

    The folder is built beside ``out`` and renamed into place, so ``out`` is either the old folder or the whole
    new one. ``genloop_export.json`` records the run, checkpoint and its sha256."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' own "Writing model shards" bars: not ours to print
    try:
        return _export(run, out, checkpoint, GPT2LMHeadModel)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _export(run: Any, out: Path, checkpoint: str, GPT2LMHeadModel: Any) -> Path:  # noqa: N803 - the class
    system, info = load_system(run.dir, checkpoint)
    _refuse_family(run, system)
    net: GPT = system.net.float().eval()
    model = GPT2LMHeadModel(gpt2_config(net, int(system.tokenizer.eot_id)))
    missing, unexpected = model.load_state_dict(gpt2_state_dict(net), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:  # a transformers version with other names: refuse rather than write a wrong model
        raise ConfigError(
            f"--format transformers: this transformers version's GPT-2 differs (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    model.tie_weights()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        build = Path(tmp) / "model"
        model.save_pretrained(str(build))
        save_tokenizer(system.tokenizer, build, net.block_size)
        (build / "genloop_export.json").write_text(
            json.dumps(
                {
                    "format": EXPORT_FORMAT,
                    "run_id": run.id,
                    "model": info["model"],
                    "checkpoint": checkpoint,
                    "checkpoint_sha256": info["checkpoint_sha256"],
                    "tokenizer": system.tokenizer.kind,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        if out.exists():
            shutil.rmtree(out)
        build.rename(out)
    return out
