"""Chat and instruction tuning: the JSONL formats and their errors, the assistant-only loss mask (tests that fail
if prompt tokens contribute to the loss, for gpt and hf-causal-lm), truncation by whole turns, packing, a tiny
chat run, ``genloop chat`` piped, ``pipe.chat``, ``genloop eval``'s assistant loss, ``/v1/chat/completions``
through the official ``openai`` client, and ``--knowledge`` retrieval."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_GPT, cli

import genloop
from genloop.errors import ConfigError, DataError
from genloop.modalities.text import TextDataConfig, load_text_dataset
from genloop.modalities.text.chat import (
    END,
    ChatBatches,
    ChatData,
    ChatTemplate,
    check_messages,
    pack,
    targets,
)
from genloop.modalities.text.tokenizers import CharTokenizer

CHAT_GPT = [*TINY_GPT, "model.block_size=96", "train.warmup_steps=2", "train.lr=3e-3"]


def _conversations(n: int = 24) -> list[dict[str, Any]]:
    """Short conversations in both formats: one-digit sums, some multi-turn with a system message."""
    rows: list[dict[str, Any]] = []
    for i in range(n):
        a, b = i % 10, (3 * i) % 10
        if i % 2:
            rows.append({"prompt": f"{a}+{b}", "response": str(a + b)})
        else:
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": "sum"},
                        {"role": "user", "content": f"{a}+{b}"},
                        {"role": "assistant", "content": str(a + b)},
                    ]
                }
            )
    return rows


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("chat")
    data = _write(root / "chat.jsonl", _conversations())
    run = genloop.train(
        "gpt", str(data), overrides=[*CHAT_GPT, "train.eval_every=10"], steps=20, runs_dir=root / "runs", progress=False
    )
    return root, run


# --- data -----------------------------------------------------------------------------------------------


def test_both_formats_parse_and_are_detected(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"prompt": "2+2", "response": "4", "system": "math"},
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text", "text": "a"}]},  # OpenAI's content parts
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
                {"role": "assistant", "content": "d"},
            ]
        },
    ]
    ds = load_text_dataset(TextDataConfig(name=str(_write(tmp_path / "c.jsonl", rows)), val_fraction=0.34))
    info = ds.info()
    assert info["format"] == "chat" and info["documents"] == {"train": 2, "val": 1}
    assert ds.chat is not None and ds.chat.template.kind == "genloop"
    convs = ds.chat.train + ds.chat.val
    assert {"role": "system", "content": "math"} in [m for c in convs for m in c]
    assert any(c[1]["content"] == "a" for c in convs)
    # a plain-text JSONL is still read as documents
    plain = load_text_dataset(TextDataConfig(name=str(_write(tmp_path / "t.jsonl", [{"text": "abc"}, {"text": "de"}]))))
    assert plain.chat is None and plain.info().get("format") is None
    with pytest.raises(ConfigError, match="data.format must be"):
        TextDataConfig(format="dialogue")


@pytest.mark.parametrize(
    "record, message",
    [
        ({"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "role 'bot'"),
        (
            {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]},
            "turn 1 .user. is empty",
        ),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}, "is empty"),
        ({"messages": [{"role": "user", "content": "x"}]}, "ends with a user turn"),
        ({"prompt": "x", "response": ""}, "turn 2 .assistant. is empty"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "only the first turn",
        ),
        ({"messages": []}, "non-empty list"),
        ({"messages": "hi"}, "non-empty list"),
        ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}, "type int"),
        ("[1, 2]", "expected an object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_every_bad_input_is_one_config_error_line(tmp_path: Path, record: Any, message: str) -> None:
    good = _conversations(2)
    path = _write(tmp_path / "bad.jsonl", [*good, record])
    with pytest.raises(ConfigError, match=message) as e:
        load_text_dataset(TextDataConfig(name=str(path), format="chat"))
    assert "\n" not in str(e.value) and f"{path}:3" in str(e.value)  # the file and the line


def test_format_chat_needs_a_jsonl_of_conversations(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(ConfigError, match="data.format=chat needs a .jsonl"):
        load_text_dataset(TextDataConfig(name=str(tmp_path / "a.txt"), format="chat"))
    path = _write(tmp_path / "one.jsonl", _conversations(1))
    with pytest.raises(DataError, match="at least 2 conversations"):
        load_text_dataset(TextDataConfig(name=str(path)))


# --- the mask ---------------------------------------------------------------------------------------------

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "bye"},
    {"role": "assistant", "content": "ciao"},
]


def _char_template(extra: str = "") -> ChatTemplate:
    text = ChatTemplate(None).render(MESSAGES) + "abcdefghijklmnopqrstuvwxyz0123456789+ " + extra
    return ChatTemplate(CharTokenizer.train([text]))


def test_the_mask_is_exactly_the_assistant_replies_and_their_end_marker() -> None:
    t = _char_template()
    ids, mask = t.encode(MESSAGES)
    assert t.tokenizer.decode(ids.tolist()) == t.render(MESSAGES)
    assert t.tokenizer.decode(ids[mask == 1].tolist()) == f"hello{END}ciao{END}"
    assert t.render(MESSAGES[:2], generation_prompt=True).endswith("<|user|>\nhi<|end|>\n<|assistant|>\n")


def _per_token_gpt(vocab: int) -> Any:
    """A gpt system whose logits at position t depend on token t only (embedding -> head), so that changing one
    token can change the loss only through the token's own target: the sharpest test of what is a target."""
    from genloop.systems.base import DataSpec
    from genloop.systems.lm import GPTSystem

    torch.manual_seed(0)
    system = GPTSystem(GPTSystem.Config(n_layer=1, n_head=2, n_embd=16, block_size=96), DataSpec(vocab_size=vocab))
    net = system.net
    net.forward = lambda idx, cache=None: net.lm_head(net.wte(idx))  # type: ignore[method-assign]
    return system


def _loss_and_grad(system: Any, template: ChatTemplate, convs: list[list[dict[str, str]]]) -> tuple[float, Any]:
    chat = ChatData(template, convs, convs[:1])
    batches = ChatBatches(chat, template.tokenizer.eot_id, batch_size=len(convs), block_size=95, seed=0)
    ids, mask = pack(chat.encoded("train", 95)[0], 96, template.tokenizer.eot_id, seed=None)
    x, y = targets(ids, mask)
    assert batches.ids.shape == ids.shape
    system.zero_grad()
    loss = system.loss(x, y)
    loss.backward()
    return float(loss.detach()), system.net.wte.weight.grad.clone()


def test_prompt_tokens_do_not_contribute_to_the_loss_gpt() -> None:
    """Change only the user and system turns (same lengths): the loss and gradients stay exactly the same; change
    an assistant turn: they change. Fails if any prompt token is a target of the loss."""
    t = _char_template("XYZQ")
    system = _per_token_gpt(t.tokenizer.vocab_size)

    def convs(user: str, system_msg: str, reply: str) -> list[list[dict[str, str]]]:
        return [
            [
                {"role": "system", "content": system_msg},
                {"role": "user", "content": user},
                {"role": "assistant", "content": reply},
            ],
            [{"role": "user", "content": user[::-1]}, {"role": "assistant", "content": "ok"}],
        ]

    base_loss, base_grad = _loss_and_grad(system, t, convs("hi there", "be brief", "hello"))
    loss, grad = _loss_and_grad(system, t, convs("XY QZYXZ", "QQZZXXYY", "hello"))
    assert loss == pytest.approx(base_loss, abs=1e-6)
    assert torch.allclose(grad, base_grad, atol=1e-7)
    loss, grad = _loss_and_grad(system, t, convs("hi there", "be brief", "hexlo"))
    assert loss != pytest.approx(base_loss, abs=1e-4)
    assert not torch.allclose(grad, base_grad, atol=1e-7)


def _logit_grads(system: Any, x: torch.Tensor, y: torch.Tensor, logits_of: Any) -> torch.Tensor:
    """d loss / d logits per position, through the system's own loss."""
    captured: dict[str, torch.Tensor] = {}

    def hook(_m: Any, _i: Any, out: Any) -> Any:
        logits = out.logits if hasattr(out, "logits") else out
        logits.retain_grad()
        captured["logits"] = logits
        return out

    handle = logits_of.register_forward_hook(hook)
    try:
        system.zero_grad()
        system.loss(x, y).backward()
    finally:
        handle.remove()
    return captured["logits"].grad.abs().sum(-1)


def test_gpt_batches_put_the_gradient_on_assistant_positions_only(chat_run: tuple[Path, Any]) -> None:
    root, run = chat_run
    from genloop.modalities.text.modality import TextModality

    ds = load_text_dataset(TextDataConfig(name=str(root / "chat.jsonl")))
    batches = TextModality.chat_batches(ds, 4, 96, 0)
    assistant = torch.from_numpy(batches.mask[batches.rows(0)][:, 1:] > 0)  # the next token is the assistant's
    x, y = next(batches)
    system = _per_token_gpt(ds.tokenizer.vocab_size)
    g = _logit_grads(system, x, y, system.net.lm_head)
    assert torch.equal(g > 0, assistant) and assistant.sum() > 0  # a gradient there and nowhere else


# --- truncation and packing ---------------------------------------------------------------------------------


def test_long_conversations_lose_their_oldest_exchanges_and_are_counted() -> None:
    t = _char_template()
    full = len(t.encode(MESSAGES)[0])
    kept, removed = t.fit(list(MESSAGES), full - 1)
    assert removed == 2 and kept == [MESSAGES[0], *MESSAGES[3:]]  # the system message stays
    kept, removed = t.fit(list(MESSAGES), full)
    assert removed == 0 and kept == MESSAGES
    kept, removed = t.fit(list(MESSAGES), 5)
    assert kept is None
    chat = ChatData(t, [list(MESSAGES), list(MESSAGES[1:3]), list(MESSAGES)], [list(MESSAGES)])
    encoded, stats = chat.encoded("train", full - 1)
    assert stats == {"conversations": 3, "truncated": 2, "turns_removed": 4, "dropped": 0}
    _, stats = chat.encoded("train", len(t.encode(MESSAGES[1:3])[0]))
    assert stats["dropped"] == 2 and stats["conversations"] == 1
    with pytest.raises(DataError, match="no train conversation fits"):
        chat.encoded("train", 5)


def test_truncation_is_reported_when_training(tmp_path: Path) -> None:
    long = {"messages": [*MESSAGES] + [{"role": "user", "content": "x" * 30}, {"role": "assistant", "content": "y"}]}
    path = _write(tmp_path / "long.jsonl", [long, *_conversations(6)])
    with pytest.warns(UserWarning, match="lost .* oldest turn|left out"):
        run = genloop.train("gpt", str(path), overrides=CHAT_GPT, steps=1, runs_dir=tmp_path / "runs", progress=False)
    fit = run.info["chat"]["train_fit"]
    assert fit["truncated"] + fit["dropped"] >= 1 and run.info["chat"]["template"] == "genloop"


def test_packing_keeps_every_mask_on_its_own_tokens() -> None:
    t = _char_template()
    convs = [MESSAGES[1:3], MESSAGES, MESSAGES[3:], MESSAGES[:3]]
    encoded = [t.encode(c) for c in convs]
    eot = t.tokenizer.eot_id
    ids, mask = pack(encoded, 160, eot, seed=3)
    assert ids.shape[1] == 160 and ids.shape[0] < len(convs)  # short examples share rows
    found = []
    for row, m in zip(ids, mask):
        assert not m[row == eot].any()  # padding and separators are never targets
        at = 0
        while at < len(row) and row[at] != eot:
            end = at + int(np.argmax(row[at:] == eot))
            seg, seg_mask = row[at:end], m[at:end]
            match = [i for i, (a, mm) in enumerate(encoded) if np.array_equal(a, seg) and np.array_equal(mm, seg_mask)]
            assert match, "a packed conversation lost its alignment with its mask"
            found += match[:1]
            at = end + 1
    assert sorted(found) == list(range(len(convs)))
    x, y = targets(ids, mask)
    assert torch.equal(y >= 0, torch.from_numpy(mask[:, 1:] > 0))
    assert torch.equal(y[y >= 0], torch.from_numpy(ids[:, 1:])[y >= 0])


# --- the run, the pipeline, the CLI, eval -------------------------------------------------------------------


def test_a_tiny_chat_run_trains_and_scores_assistant_tokens(chat_run: tuple[Path, Any]) -> None:
    _, run = chat_run
    assert run.info["status"] == "finished" and run.info["chat"]["template"] == "genloop"
    assert run.info["chat"]["assistant_tokens"]["train"] > 0
    assert np.isfinite(run.info["best"]["value"])  # val_loss on the held-out assistant tokens


def test_a_chat_run_resumes_exactly(tmp_path: Path) -> None:
    """Stopped part-way and resumed, a chat run ends with the weights of an unbroken one (same packed rows, same
    batches: the packing and the draws depend only on the seed)."""
    from genloop.serialization import load_tensors

    data = str(_write(tmp_path / "chat.jsonl", _conversations(12)))
    kw: dict[str, Any] = {"overrides": CHAT_GPT, "progress": False}
    full = genloop.train("gpt", data, steps=120, runs_dir=tmp_path / "a", **kw)
    part = genloop.train("gpt", data, steps=120, time_budget=0.2, runs_dir=tmp_path / "b", **kw)
    assert 0 < part.info["step"] < 120
    resumed = genloop.resume(part.id, time_budget=1000, runs_dir=tmp_path / "b", progress=False)
    assert resumed.info["step"] == 120
    wa, _ = load_tensors(full.dir / "model.safetensors")
    wb, _ = load_tensors(resumed.dir / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_pipeline_chat_streams_and_replays(chat_run: tuple[Path, Any]) -> None:
    root, run = chat_run
    pipe = genloop.load(run.id, runs_dir=root / "runs")
    msgs = [{"role": "system", "content": "sum"}, {"role": "user", "content": "1+2"}]
    reply = pipe.chat(msgs, seed=3, max_tokens=8, temperature=0.8)
    assert isinstance(reply, str) and END not in reply
    assert "".join(pipe.chat(msgs, seed=3, max_tokens=8, temperature=0.8, stream=True)) == reply
    done, info = pipe.chat_complete(msgs, n=2, seed=3, max_tokens=8, temperature=0.8)
    assert done[0].text == reply and info["prompt"].endswith("<|assistant|>\n") and info["turns_removed"] == 0
    history = msgs + [{"role": "assistant", "content": "3"}, {"role": "user", "content": "4+4"}] * 1
    long = [msgs[0]] + [m for _ in range(6) for m in (msgs[1], {"role": "assistant", "content": "3"})] + [msgs[1]]
    _, info = pipe.chat_complete(long, max_tokens=8)
    assert info["turns_removed"] > 0 and info["prompt"].startswith("<|system|>\nsum")
    pipe.chat(history, max_tokens=2)
    with pytest.raises(ConfigError, match="ends with an assistant turn"):
        pipe.chat(msgs + [{"role": "assistant", "content": "3"}])
    with pytest.raises(ConfigError, match="role 'tool'"):
        check_messages([{"role": "tool", "content": "x"}], need_reply=False)


def test_genloop_chat_piped(chat_run: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    root, run = chat_run
    lines = "1+2\n/system add\n3+4\n\n/reset\n/nope\n5+5\n/exit\nnever sent\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    args = ["chat", run.id, "--runs-dir", str(root / "runs"), "--max-tokens", "6", "--seed", "1"]
    code, out, err = cli(capsys, *args)
    assert code == 0
    replies = out.split("\n")[:-1]
    assert len(replies) == 3  # one line per message; commands and the message after /exit give none
    assert "system message set" in err and "conversation reset" in err and "unknown command /nope" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    code, out, _ = cli(capsys, *args)
    assert out.split("\n")[:-1] == replies  # reply k uses seed + k: a session replays
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    code, out, err = cli(capsys, *args, "--top-p", "2")  # bad settings: one error line before any message
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1


def test_chat_session_history_reset_and_system() -> None:
    from genloop.cli.chat import ChatSession

    class Pipe:
        info = {"run_id": "r"}

        def __init__(self) -> None:
            self.seen: list[Any] = []

        def chat(self, messages: Any, seed: int, stream: bool, **kw: Any) -> Iterator[str]:
            self.seen.append((messages, seed))
            return iter(["ok"])

    pipe = Pipe()
    s = ChatSession(pipe, "be kind", 10, {})
    s.reply("a", lambda _: None)
    s.reply("b", lambda _: None)
    assert pipe.seen[-1][0][0] == {"role": "system", "content": "be kind"} and len(pipe.seen[-1][0]) == 4
    assert [seed for _, seed in pipe.seen] == [10, 11]
    assert s.command("/reset") and s.turns == [] and s.system == "be kind"
    s.reply("c", lambda _: None)
    assert pipe.seen[-1][0] == [{"role": "system", "content": "be kind"}, {"role": "user", "content": "c"}]
    s.command("/system short")
    assert s.turns == [] and s.messages("d")[0]["content"] == "short"
    s.command("/system")
    assert s.messages("d") == [{"role": "user", "content": "d"}]
    assert s.command("/exit") == "exit" and s.command("hello") is None


def test_eval_reports_the_assistant_loss(chat_run: tuple[Path, Any]) -> None:
    root, run = chat_run
    r = genloop.evaluate(run.id, n=2, runs_dir=root / "runs")
    assert np.isfinite(r["assistant_loss"]) and r["assistant_protocol"]["tokens_scored"] > 0
    assert r["assistant_protocol"]["template"] == "genloop"


# --- hf-causal-lm -------------------------------------------------------------------------------------------

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _hf_dir(tmp_path: Path, template: str | None) -> Path:
    import transformers
    from test_hf_lm import _save_model

    path = _save_model("gpt2", tmp_path / "hf")
    if template is not None:
        tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        tok.chat_template = template
        tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("template", [None, CHATML])
def test_hf_causal_lm_masks_prompt_tokens(tmp_path: Path, template: str | None) -> None:
    from genloop.modalities.text.modality import TextModality
    from genloop.systems.base import DataSpec
    from genloop.systems.hf_lm import HFCausalLMConfig, HFCausalLMSystem

    path = _hf_dir(tmp_path, template)
    data = _write(tmp_path / "chat.jsonl", _conversations(8))
    ds = load_text_dataset(TextDataConfig(name=str(data)), tokenizer=str(path))
    assert ds.chat.template.kind == ("hf" if template else "genloop")
    ids, mask = ds.chat.template.encode(ds.chat.train[0])
    replies = "".join(m["content"] for m in ds.chat.train[0] if m["role"] == "assistant")
    assert ds.tokenizer.decode(ids[mask == 1].tolist()).startswith(replies)
    system = HFCausalLMSystem(HFCausalLMConfig(init=str(path)), DataSpec(vocab_size=ds.tokenizer.vocab_size))
    batches = TextModality.chat_batches(ds, 2, 64, 0)
    assistant = torch.from_numpy(batches.mask[batches.rows(0)][:, 1:] > 0)
    x, y = next(batches)
    g = _logit_grads(system, x, y, system.net)
    assert torch.equal(g > 0, assistant) and assistant.sum() > 0


@pytest.mark.parametrize("lora", [False, True])
def test_hf_causal_lm_chat_run_full_and_lora(tmp_path: Path, lora: bool) -> None:
    path = _hf_dir(tmp_path, CHATML)
    data = _write(tmp_path / "chat.jsonl", _conversations(8))
    overrides = [f"model.init={path}", f"model.lora={str(lora).lower()}", "model.block_size=64", *TINY_GPT[4:]]
    run = genloop.train(
        "hf-causal-lm", str(data), overrides=overrides, steps=2, runs_dir=tmp_path / "runs", progress=False
    )
    assert run.info["chat"]["template"] == "hf"
    pipe = genloop.load(run.id, runs_dir=tmp_path / "runs")
    assert pipe.chat_template.kind == "hf"  # the template travels with the run's saved tokenizer
    assert pipe.chat_prompt([{"role": "user", "content": "1+1"}])[0].endswith("<|im_start|>assistant\n")
    assert isinstance(pipe.chat([{"role": "user", "content": "1+1"}], max_tokens=3, seed=0), str)


# --- the OpenAI-compatible server -------------------------------------------------------------------------------

TOKEN = "chat-client-token-for-tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(chat_run: tuple[Path, Any]) -> Iterator[tuple[str, str, Any]]:
    import uvicorn
    from studio_support import WorkerThread

    from genloop.server.app import create_app
    from genloop.server.settings import Settings

    root, run = chat_run
    settings = Settings(
        runs=root / "runs",
        db_url=f"sqlite:///{root / 'studio.sqlite'}",
        media_dir=root / "media",
        uploads_dir=root / "uploads",
        token=TOKEN,
        poll_interval=0.01,
    )
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    with WorkerThread(settings):
        yield f"http://127.0.0.1:{port}", run.id, genloop.load(run.id, runs_dir=root / "runs")
    server.should_exit = True
    thread.join(timeout=30)


def test_openai_client_chat_completions(live: tuple[str, str, Any]) -> None:
    import openai

    base, run_id, pipe = live
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0, timeout=60)
    msgs = [{"role": "system", "content": "sum"}, {"role": "user", "content": "2+3"}]
    r = client.chat.completions.create(model=run_id, messages=msgs, max_tokens=6, seed=5, n=2, temperature=0.9)
    assert r.object == "chat.completion" and r.model == run_id and len(r.choices) == 2
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason in ("stop", "length")
    assert r.choices[0].message.content == pipe.chat(msgs, seed=5, max_tokens=6, temperature=0.9)
    assert r.choices[1].message.content == pipe.chat(msgs, seed=6, max_tokens=6, temperature=0.9)
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model=run_id,
            messages=msgs,
            max_tokens=6,
            seed=5,
            temperature=0.9,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    # GenLoop's extension: the finish chunk names the stored reply, whose recipe keeps the conversation
    [last] = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    [gid] = last.model_extra["genloop"]["generation_ids"]
    import httpx

    row = httpx.get(f"{base}/v1/generations/{gid}", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert row["recipe"]["messages"] == msgs and row["text"] == text
    stopped = client.chat.completions.create(
        model=run_id,
        messages=msgs,
        max_tokens=6,
        seed=5,
        temperature=0.9,
        stop=[r.choices[0].message.content[1:2] or "x"],
    )
    assert len(stopped.choices[0].message.content) <= 1 or stopped.choices[0].finish_reason == "length"


def test_openai_client_chat_errors(live: tuple[str, str, Any]) -> None:
    import openai

    base, run_id, _ = live
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=run_id, messages=[{"role": "user", "content": ""}])
    assert e.value.body["param"] == "messages" and "is empty" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="tool"):
        client.chat.completions.create(model=run_id, messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}])
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(
            model=run_id,
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="20990101-000000-gpt-0000", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model=run_id, messages=[{"role": "user", "content": "x"}]
        )


# --- retrieval ----------------------------------------------------------------------------------------------


def test_knowledge_retrieval_and_citations(
    chat_run: tuple[Path, Any], tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    pytest.importorskip("bm25s")
    from genloop.modalities.text.knowledge import KnowledgeBase

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("Refunds are paid within 14 days of the return.\n", encoding="utf-8")
    (docs / "shipping.txt").write_text("Shipping to Europe takes 5 days.\n\n" + "Filler. " * 100, encoding="utf-8")
    (docs / "logo.png").write_bytes(b"\x89PNG\x00")
    kb = KnowledgeBase.from_folder(docs, k=2)
    assert [p.name for p in kb.search("how long does shipping to Europe take")][:1] == ["shipping.txt#1"]
    msgs = kb.augment([{"role": "user", "content": "When are refunds paid?"}])
    assert msgs[0]["role"] == "system" and "[1] (refunds.md#1) Refunds are paid" in msgs[0]["content"]
    assert [p.name for p in kb.cited("paid in 14 days [1]")] == ["refunds.md#1"]
    assert kb.cited("no citation") == kb.last
    assert kb.search("zebra") == []
    root, run = chat_run
    monkeypatch.setattr("sys.stdin", io.StringIO("when are refunds paid?\n"))
    args = ["chat", run.id, "--runs-dir", str(root / "runs"), "--max-tokens", "4", "--knowledge", str(docs)]
    code, _, err = cli(capsys, *args)
    assert code == 0
    assert "knowledge: 3 passages from 2 file(s)" in err and "sources: [1] refunds.md#1" in err
