"""The text pipeline: a trained language model in, text out, with every sampling control per call.

    pipe = genloop.load(run_id)
    out = pipe(prompt="def ", max_tokens=100, temperature=0.8, top_p=0.95, seed=0, n=3)
    out.texts                                   # three completions (sample i is seed + i, as for images)
    for piece in pipe(prompt="The ", stream=True):
        print(piece, end="", flush=True)        # text as the tokens arrive

The loop itself lives in :mod:`genloop.generation.text_sampling` (shared with every text family);
this class adds what a user-facing call needs: the run's tokenizer, prompt checks, and the recipe
(run, checkpoint sha256, every sampling setting, seed) stored with every output.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from .. import __version__
from ..errors import ConfigError
from ..systems.base import System
from .text_sampling import Completion, SamplingParams, complete, generate_text, score_prompt

MAX_TOKENS = 100_000  # one call's limit on new tokens (the server sets a tighter one)


@dataclass
class TextOutput:
    modality: ClassVar[str] = "text"  # which registered modality stores and scores it
    texts: list[str]
    prompt: str
    recipe: dict[str, Any] = field(default_factory=dict)  # shared by the batch; text i used seed + i
    moderation: list[dict[str, Any] | None] = field(default_factory=list)  # per text: a flag or block, else None

    @property
    def text(self) -> str:
        return self.texts[0]

    def _repr_html_(self) -> str:
        """Jupyter shows each completion after its prompt, with the recipe (:mod:`genloop.generation.display`)."""
        from .display import text_html

        return text_html(self.texts, self.prompt, self.recipe)

    def _repr_markdown_(self) -> str:
        from .display import text_markdown

        return text_markdown(self.texts, self.prompt, self.recipe)

    def recipe_of(self, i: int) -> dict[str, Any]:
        r = {**self.recipe, "seed": self.recipe["seed"] + i, "n": 1, "index": i, "batch_seed": self.recipe["seed"]}
        if i < len(self.moderation) and self.moderation[i] is not None:
            r["moderation"] = self.moderation[i]
        return r


class SuppressTokens:
    """A causal LM with some token ids made impossible to sample.

    A character tokenizer's ``<unk>`` stands for characters it never saw; it is not text, so a model
    (an undertrained one does) should never be allowed to write it — decoded it would print U+FFFD.
    Setting its logit to −∞ leaves every other token's probability exactly as the model gives it.
    """

    def __init__(self, lm: Any, ids: list[int]) -> None:
        self.lm, self.ids, self.block_size = lm, list(ids), lm.block_size

    def parameters(self) -> Any:
        return self.lm.parameters()

    def new_cache(self, batch_size: int) -> Any:
        return self.lm.new_cache(batch_size)

    def __call__(self, idx: torch.Tensor, cache: Any = None) -> torch.Tensor:
        logits = self.lm(idx) if cache is None else self.lm(idx, cache=cache)
        logits[..., self.ids] = float("-inf")
        return logits


def unknown_chars_note(unknown: list[str], prompt: str) -> str:
    """One line naming the characters a tokenizer never saw (the first 8, with code points) and how many
    places in the prompt were replaced by the unknown token."""
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
    replaced = set(unknown)
    count = sum(c in replaced for c in prompt)
    return (
        f"the prompt has {len(unknown)} character(s) this model's tokenizer never saw in training: {shown}; "
        f"{count} place(s) in the prompt were replaced by the unknown token, which the model cannot read"
    )


class TextPipeline:
    """Inference for a language-model run: ``pipe(prompt=..., max_tokens=..., temperature=..., ...)``."""

    modality = "text"

    def __init__(self, system: System, info: dict[str, Any]) -> None:
        self.system = system.eval()
        self.info = info  # run_id, model, checkpoint, checkpoint_sha256, step
        self.tokenizer = system.tokenizer
        self.run_dir: Any = None  # the run's folder (set by load_pipeline): its store holds the watermark key
        if self.tokenizer is None:
            raise ConfigError(f"run {info.get('run_id')} has no tokenizer saved beside its weights")

    @property
    def device(self) -> torch.device:
        return next(self.system.parameters()).device

    @property
    def block_size(self) -> int:
        return self.system.block_size

    def compiled(self) -> Any:
        """The model's compiled decoder (built once per pipeline; see
        :class:`~genloop.models.transformer.CompiledDecoder`)."""
        from ..models.transformer import GPT, CompiledDecoder

        lm = self.system.causal_lm()
        if not isinstance(lm, GPT):
            raise ConfigError(f"--compile applies to gpt models; '{self.info.get('model')}' decodes with its own cache")
        if getattr(self, "_compiled", None) is None:
            self._compiled = CompiledDecoder(lm)
        return self._compiled

    def recipe(self, **settings: Any) -> dict[str, Any]:
        from .pipelines import recipe_info

        wm = settings.pop("watermark", None)  # the processor is recorded by its settings and key id, never the key
        if wm is not None:
            settings["watermark"] = wm.recipe()
        constraint = settings.pop("constraint", None)  # recorded by its pattern (and form), not as an object
        if constraint is not None:
            settings["constraint"] = constraint.recipe()
        return {**recipe_info(self.info), "tokenizer": self.tokenizer.kind, **settings, "genloop_version": __version__}

    def watermark(self, watermark: Any = True) -> Any:
        """The watermark processor a call's ``watermark=`` asks for: None for False/None; for True (or a dict of
        gamma, delta, z_threshold, ignore_repeated) the green-list watermark keyed by this run store's key;
        a :class:`~genloop.safety.text_watermark.TextWatermark` as given."""
        from ..safety.text_watermark import TextWatermark, for_store

        if watermark is None or watermark is False:
            return None
        if isinstance(watermark, TextWatermark):
            return watermark
        store = Path(self.run_dir).parent if self.run_dir is not None else None
        vocab = self.tokenizer.vocab_size  # the lists the detector, which has only the tokenizer, draws
        if watermark is True:
            return for_store(store, vocab_size=vocab)
        if isinstance(watermark, dict):
            known = {"gamma", "delta", "z_threshold", "ignore_repeated"}
            unknown = set(watermark) - known - {"scheme", "key_id"}
            if unknown or watermark.get("scheme", "kirchenbauer") != "kirchenbauer":
                raise ConfigError(f"watermark takes {sorted(known)} (scheme kirchenbauer), got {watermark!r}")
            return for_store(store, vocab_size=vocab, **{k: v for k, v in watermark.items() if k in known})
        raise ConfigError(f"watermark must be true/false or a dict of settings, got {watermark!r}")

    def constraint(self, constraint: Any) -> Any:
        """The logits processor a call's ``constraint=`` asks for (None, a regex pattern, or a
        :class:`~genloop.generation.constraints.RegexConstraint` such as a poetry form's), bound to this run's
        tokenizer once per pattern: binding searches the vocabulary, which a batch of calls should not repeat."""
        from .constraints import TokenConstraint, as_constraint

        if isinstance(constraint, TokenConstraint):
            return constraint
        c = as_constraint(constraint)
        if c is None:
            return None
        bound = getattr(self, "_constraints", None)
        if bound is None:
            bound = self._constraints = {}
        key = (c.pattern, tuple(sorted(c.info.items())))
        if key not in bound:
            bound[key] = c.bind(self.tokenizer)
        return bound[key]

    def params(
        self,
        max_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: list[str] | str | None = None,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logit_bias: dict[int, float] | dict[str, float] | None = None,
        watermark: Any = None,
        constraint: Any = None,
    ) -> SamplingParams:
        """Checked settings. ``logit_bias`` keys may be strings (JSON objects, recipes): they are token ids."""
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        try:
            bias = {int(k): float(v) for k, v in (logit_bias or {}).items()}
        except (TypeError, ValueError):
            raise ConfigError(f"logit_bias maps token ids to numbers, got {logit_bias!r}") from None
        vocab = self.tokenizer.vocab_size
        if any(not 0 <= k < vocab for k in bias):
            raise ConfigError(f"logit_bias names token ids outside this model's vocabulary (0..{vocab - 1})")
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            stop=stops,
            num_beams=num_beams,
            length_penalty=length_penalty,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            logit_bias=bias,
            watermark=self.watermark(watermark),
            constraint=self.constraint(constraint),
        )
        params.validate(MAX_TOKENS)
        return params

    def _lm(self, compile: bool) -> Any:
        """The model to sample: compiled if asked, with a char tokenizer's ``<unk>`` made unsampleable."""
        tok, lm = self.tokenizer, self.compiled() if compile else self.system.causal_lm()
        if getattr(tok, "unk_id", None) is not None:
            lm = SuppressTokens(lm, [tok.unk_id])
        return lm

    def check_prompt(self, prompt: str) -> list[str]:
        """Warnings about a prompt (returned, and issued as ``UserWarning``): see :meth:`prompt_notes`."""
        notes = self.prompt_notes(prompt)
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=3)
        return notes

    def prompt_notes(self, prompt: str) -> list[str]:
        """What is wrong with a prompt, without warning: characters the tokenizer never saw (each becomes an
        unknown token the model cannot read), and too long for the context (the start is truncated). The studio's
        worker puts these in a generate job's result, so the page can show them."""
        if not isinstance(prompt, str):
            raise ConfigError(f"prompt must be text, got {type(prompt).__name__}")
        n = len(self.tokenizer.encode(prompt))
        notes = []
        unknown = self.tokenizer.unknown_chars(prompt)
        if unknown:
            notes.append(unknown_chars_note(unknown, prompt))
        if n >= self.block_size:
            keep = max(1, self.block_size - self.block_size // 4)
            notes.append(
                f"the prompt has {n} tokens but the model's context is {self.block_size}; "
                f"it sees only the last {keep} (the start is truncated)"
            )
        return notes

    # --- moderation (genloop.safety.moderation) -----------------------------------------------------------
    def _store(self) -> Path | None:
        return Path(self.run_dir).parent if self.run_dir is not None else None

    def moderate_prompt(self, prompt: str, request_id: str, moderator: Any = None) -> Any:
        """The prompt's moderation decision, logged to the run store; a block raises ``ModerationBlocked``."""
        from ..safety import moderation

        d = moderation.check(prompt, "prompt", request_id, self._store(), moderator)
        if d.action == "block":
            raise moderation.ModerationBlocked(d)
        return d

    def moderate_outputs(
        self, texts: list[str], prompt_decision: Any, request_id: str, moderator: Any = None
    ) -> tuple[list[str], list[dict[str, Any] | None]]:
        """Each text checked (and logged): a blocked one is withheld (``""``); the recipe mark of each (the output's
        own decision, else a flagged prompt's, else None)."""
        from ..safety import moderation

        out, marks = [], []
        for t in texts:
            d = moderation.check(t, "output", request_id, self._store(), moderator)
            out.append("" if d.action == "block" else t)
            chosen = d if d.action != "allow" else prompt_decision
            marks.append({**chosen.recipe(), "target": chosen.target} if chosen.action != "allow" else None)
        return out, marks

    def _guarded(
        self, on_piece: Callable[[int, str], None] | None, moderator: Any
    ) -> Callable[[int, str], None] | None:
        """``on_piece`` that stops relaying a row's text once what it has so far would be blocked."""
        from ..safety import moderation

        m = moderator or moderation.get()
        if on_piece is None or not m.enabled:
            return on_piece
        sofar: dict[int, str] = {}
        cut: set[int] = set()

        def relay(row: int, piece: str) -> None:
            if row in cut:
                return
            sofar[row] = sofar.get(row, "") + piece
            if m.decide(moderation.tail(sofar[row]), "output").action == "block":  # the whole text: at the end
                cut.add(row)
                return
            on_piece(row, piece)

        return relay

    def stream_to(
        self, on_piece: Callable[[str], None], prompt: str = "", seed: int = 0, **sampling: Any
    ) -> TextOutput:
        """One completion, handing each piece of text to ``on_piece`` as it is generated, then returned whole
        with its recipe, as ``pipe(prompt=..., n=1, seed=...)`` would (the CLI streams so)."""
        output, _ = self.complete(prompt, n=1, seed=seed, on_piece=lambda _, piece: on_piece(piece), **sampling)
        return output

    def complete(
        self,
        prompt: str = "",
        n: int = 1,
        seed: int = 0,
        top_logprobs: int = 0,
        on_piece: Callable[[int, str], None] | None = None,
        use_cache: bool = True,
        compile: bool = False,
        request_id: str | None = None,
        moderator: Any = None,
        **sampling: Any,
    ) -> tuple[TextOutput, list[Completion]]:
        """``n`` completions as ``pipe(...)`` gives them (same seeds, same texts), each also with its tokens,
        the model's log-probability of each (and the ``top_logprobs`` likeliest alternatives) and why it
        ended — what an API needs for ``logprobs``, ``best_of`` and ``finish_reason``. ``on_piece(row, piece)``
        receives text as it is sampled (the studio worker streams every row this way).

        Moderation (:mod:`genloop.safety.moderation`) checks the prompt first (a block raises ``ModerationBlocked``)
        and every completion after: a blocked one is withheld (text ``""``, ``finish_reason`` ``content_filter``,
        and ``on_piece`` stops relaying it). ``request_id`` names the call in the moderation log."""
        from ..safety import moderation

        if not 1 <= n <= 10_000:
            raise ConfigError(f"--n must be between 1 and 10000, got {n}")
        params = self.params(**sampling)
        self.check_prompt(prompt)
        request_id = request_id or moderation.new_request_id()
        verdict = self.moderate_prompt(prompt, request_id, moderator)
        on_piece = self._guarded(on_piece, moderator)
        tok = self.tokenizer
        done = complete(
            self._lm(compile),
            tok.encode,
            tok.decode,
            prompt,
            params,
            seed=seed,
            n=n,
            eot_id=tok.eot_id,
            use_cache=use_cache,
            top_logprobs=top_logprobs,
            on_piece=on_piece,
        )
        recipe = self.recipe(prompt=prompt, seed=seed, n=n, **vars(params))
        texts, marks = self.moderate_outputs([c.text for c in done], verdict, request_id, moderator)
        for c, text, mark in zip(done, texts, marks):
            if mark is not None and mark["action"] == "block":
                c.text, c.finish_reason = text, "content_filter"
        return TextOutput(texts, prompt, recipe, marks), done

    # --- chat -------------------------------------------------------------------------------------
    @property
    def chat_template(self) -> Any:
        """How this model's conversations become text (:class:`~genloop.modalities.text.chat.ChatTemplate`):
        the HF tokenizer's chat template when it has one, else GenLoop's markers."""
        if getattr(self, "_chat_template", None) is None:
            from ..modalities.text.chat import ChatTemplate

            self._chat_template = ChatTemplate(self.tokenizer)
        return self._chat_template

    def chat_prompt(self, messages: list[dict[str, Any]], max_tokens: int = 200) -> tuple[str, list[str], int]:
        """The prompt a reply to ``messages`` continues (the conversation in the chat template, then the
        assistant's header), the stop strings that end a reply, and how many of the oldest turns were left out
        so the prompt leaves room in the context (a quarter of it, or ``max_tokens`` if less) for the reply."""
        from ..modalities.text.chat import chat_prompt

        return chat_prompt(self.chat_template, messages, self.block_size, max_tokens)

    def chat_complete(
        self,
        messages: list[dict[str, Any]],
        n: int = 1,
        seed: int = 0,
        on_piece: Callable[[int, str], None] | None = None,
        **sampling: Any,
    ) -> tuple[list[Completion], dict[str, Any]]:
        """``n`` replies to ``messages`` with their tokens and finish reasons (:meth:`complete` on the chat
        prompt), and ``{"prompt", "turns_removed"}``. Sampling settings are those of :meth:`__call__`; the
        template's end-of-turn strings are added to ``stop``."""
        prompt, stops, removed = self.chat_prompt(messages, sampling.get("max_tokens", 200))
        given = sampling.pop("stop", None)
        given = [given] if isinstance(given, str) else list(given or [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a long prompt was already cut by whole turns
            _, done = self.complete(prompt, n=n, seed=seed, on_piece=on_piece, stop=given + stops, **sampling)
        return done, {"prompt": prompt, "turns_removed": removed}

    def chat(
        self, messages: list[dict[str, Any]], seed: int = 0, stream: bool = False, **sampling: Any
    ) -> str | Iterator[str]:
        """The assistant's reply to ``messages`` (``[{"role": "system"|"user"|"assistant", "content"}]``, ending
        with a user turn), or with ``stream=True`` an iterator of its pieces as they are generated.

            reply = pipe.chat([{"role": "user", "content": "Hi"}], temperature=0.7, max_tokens=100, seed=0)

        Takes the sampling settings of :meth:`__call__` (``max_tokens``, ``temperature``, ``top_k``, ``top_p``,
        ``stop``, penalties, ...). The oldest turns are left out when the conversation is longer than the
        context (the system message stays)."""
        if not stream:
            done, _ = self.chat_complete(messages, seed=seed, **sampling)
            return done[0].text
        return self.chat_stream(messages, seed=seed, **sampling)

    def summarize(self, document: str, words: int | None = None, seed: int = 0, **sampling: Any) -> str:
        """A summary of ``document`` of about ``words`` words (None: the length the model prefers), from a run
        trained on ``{"document", "summary"}`` records (see :mod:`genloop.modalities.text.tasks`). Greedy unless
        a ``temperature`` is given; the other sampling settings are those of :meth:`__call__`."""
        from ..modalities.text.tasks import summarize_prompt

        sampling.setdefault("temperature", 0.0)
        return str(self.chat([{"role": "user", "content": summarize_prompt(document, words)}], seed=seed, **sampling))

    def data_to_text(self, data: dict[str, Any], seed: int = 0, **sampling: Any) -> str:
        """A written report of the fields in ``data``, from a run trained on ``{"data", "text"}`` records.
        Greedy unless a ``temperature`` is given."""
        from ..modalities.text.tasks import data_prompt

        sampling.setdefault("temperature", 0.0)
        return str(self.chat([{"role": "user", "content": data_prompt(data)}], seed=seed, **sampling))

    def chat_stream(self, messages: list[dict[str, Any]], seed: int = 0, **sampling: Any) -> Iterator[str]:
        """The reply to ``messages`` as pieces of text while it is generated (see :meth:`chat`)."""
        prompt, stops, _ = self.chat_prompt(messages, sampling.get("max_tokens", 200))
        given = sampling.pop("stop", None)
        given = [given] if isinstance(given, str) else list(given or [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a long prompt was already cut by whole turns
            pieces = self(prompt=prompt, seed=seed, stream=True, stop=given + stops, **sampling)
        yield from pieces

    def score_prompt(
        self, prompt: str, top_logprobs: int = 0
    ) -> tuple[list[int], list[float | None], list[list[tuple[int, float]] | None]]:
        """The prompt's token ids and the model's log-probability of each given those before (``None`` for the
        first and for tokens before the context window), for OpenAI's ``echo`` with ``logprobs``."""
        ids = list(self.tokenizer.encode(prompt)) if prompt else []
        if not ids:
            return [], [], []
        lps, tops = score_prompt(self._lm(False), ids, top_logprobs)
        return ids, lps, tops

    def __call__(
        self,
        prompt: str = "",
        n: int = 1,
        seed: int = 0,
        max_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: list[str] | str | None = None,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logit_bias: dict[int, float] | None = None,
        watermark: Any = None,
        constraint: Any = None,
        stream: bool = False,
        use_cache: bool = True,
        compile: bool = False,
        request_id: str | None = None,
        moderator: Any = None,
    ) -> TextOutput | Iterator[str]:
        """``n`` completions of ``prompt`` (an empty prompt starts a new document).

        Same seed, same settings ⇒ same text. ``stream=True`` (with ``n=1``) returns an iterator of text
        pieces as they are generated instead of a :class:`TextOutput`. ``compile=True`` (``gpt`` models)
        decodes through a ``torch.compile``-d step: ~1.25× the tokens/s for one stream, 1.07–1.18× for 4–8 rows,
        after a one-time compilation (BENCHMARKS.md); batches of more rows decode eagerly (compiling measured slower).
        ``watermark=True`` marks the text with the run store's green-list watermark (see :meth:`watermark`);
        :func:`genloop.safety.text_watermark.detect_text` finds it. ``constraint`` (a regex pattern or a
        :class:`~genloop.generation.constraints.RegexConstraint`, e.g. :func:`genloop.modalities.text.poetry.
        poem_constraint`) allows only text that is a whole match of it (see :mod:`genloop.generation.constraints`).

        Moderated (:mod:`genloop.safety.moderation`): a blocked prompt raises ``ModerationBlocked``; a blocked text
        is withheld (``""``, its recipe says ``moderation: {action: block, rule}``; a stream stops before the
        piece that would complete it); a flagged one passes, marked in its recipe. Every decision is logged to
        ``<runs>/moderation.jsonl`` under ``request_id`` (default: a fresh one).
        """
        from ..safety import moderation

        if not 1 <= n <= 10_000:
            raise ConfigError(f"--n must be between 1 and 10000, got {n}")
        params = self.params(
            max_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            stop,
            num_beams,
            length_penalty,
            presence_penalty,
            frequency_penalty,
            logit_bias,
            watermark,
            constraint,
        )
        if stream and n != 1:
            raise ConfigError("streaming gives one completion at a time: use n=1 with stream=True")
        self.check_prompt(prompt)
        request_id = request_id or moderation.new_request_id()
        verdict = self.moderate_prompt(prompt, request_id, moderator)
        tok, lm = self.tokenizer, self._lm(compile)
        if stream:
            pieces = generate_text(
                lm,
                tok.encode,
                tok.decode,
                prompt,
                params,
                seed=seed,
                n=1,
                eot_id=tok.eot_id,
                use_cache=use_cache,
                stream=True,
            )
            return self._moderated_stream((piece for _, piece in pieces), request_id, moderator)
        texts = generate_text(
            lm, tok.encode, tok.decode, prompt, params, seed=seed, n=n, eot_id=tok.eot_id, use_cache=use_cache
        )
        settings = {k: v for k, v in vars(params).items()}
        kept, marks = self.moderate_outputs(list(texts), verdict, request_id, moderator)
        return TextOutput(kept, prompt, self.recipe(prompt=prompt, seed=seed, n=n, **settings), marks)

    def _moderated_stream(self, pieces: Iterator[str], request_id: str, moderator: Any) -> Iterator[str]:
        """The pieces until the text so far would be blocked; the whole text is checked and logged at the end."""
        from ..safety import moderation

        m, text = moderator or moderation.get(), ""
        for piece in pieces:
            text += piece
            if m.enabled and m.decide(moderation.tail(text), "output").action == "block":
                break
            yield piece
        m.check(text, "output", request_id, self._store())
