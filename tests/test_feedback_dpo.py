"""DPO moves a tiny GPT toward the preferred completions (the log-prob margin of chosen over rejected grows)
and saves a new run that loads and generates; the text loop runs end to end with a scripted rater."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import genloop
from genloop.errors import ConfigError, DataError
from genloop.feedback.optimize import DPOConfig, _encode_pair, dpo, sequence_logprobs
from genloop.feedback.simulate import simulate
from genloop.feedback.store import FeedbackStore
from genloop.generation.pipelines import load_system
from genloop.serialization import sha256_file

TINY_GPT = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "train.batch_size=8",
    "train.precision=fp32",
    "train.tensorboard=false",
    "train.threads=1",
    "train.warmup_steps=2",
    "train.lr=3e-3",
    "train.log_every=10",
    "data.tokenizer=char",
]
PAIRS = [
    ("the ", "cat sat on the mat.", "dog ran in the fog."),
    ("a ", "cat sat.", "dog ran."),
    ("", "the cat sat on the mat.", "the dog ran in the fog."),
]


@pytest.fixture()
def gpt_run(tmp_path: Path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        ("the cat sat on the mat. the dog ran in the fog. a cat sat. a dog ran.\n" * 30), encoding="utf-8"
    )
    return genloop.train("gpt", data=str(corpus), overrides=TINY_GPT, steps=120, progress=False)


def margin(run_dir: Path) -> float:
    system, _ = load_system(run_dir)
    lm, tok = system.causal_lm(), system.tokenizer
    with torch.no_grad():
        c = sequence_logprobs(lm, [_encode_pair(tok, p, ch, lm.block_size) for p, ch, _ in PAIRS])
        r = sequence_logprobs(lm, [_encode_pair(tok, p, rj, lm.block_size) for p, _, rj in PAIRS])
    return float((c - r).mean())


def test_dpo_raises_the_margin_of_chosen_over_rejected(gpt_run) -> None:
    parent_sha = sha256_file(gpt_run.weights)
    before = margin(gpt_run.dir)
    r = dpo(gpt_run.id, PAIRS * 4, DPOConfig(beta=0.1, steps=30, lr=1e-3, seed=0))
    child = genloop.runs.RunStore().get(r["run_id"])
    after = margin(child.dir)
    assert after > before + 5, (before, after)
    assert (
        r["margin_after"] > r["margin_before"]
        and r["loss_last"] < r["loss_first"]
        and r["implicit_reward_accuracy"] == 1.0
    )
    assert sha256_file(gpt_run.weights) == parent_sha and child.info["parent"] == gpt_run.id
    assert child.info["feedback"]["method"] == "dpo" and child.info["step"] == 120 + 30
    out = genloop.load(child.id)(prompt="the ", n=2, seed=0, max_tokens=8)
    assert len(out.texts) == 2
    # seeded: the same pairs and settings give the same weights
    r2 = dpo(gpt_run.id, PAIRS * 4, DPOConfig(beta=0.1, steps=30, lr=1e-3, seed=0))
    assert sha256_file(genloop.runs.RunStore().get(r2["run_id"]).weights) == sha256_file(child.weights)


def test_dpo_bad_input(gpt_run) -> None:
    with pytest.raises(DataError, match="needs preference pairs"):
        dpo(gpt_run.id, [])
    with pytest.raises(ConfigError, match="beta > 0"):
        DPOConfig(beta=0)


def test_text_loop_with_a_scripted_rater(gpt_run, tmp_path: Path) -> None:
    store = FeedbackStore(url=f"sqlite:///{tmp_path / 'studio.sqlite'}", runs=tmp_path / "runs")
    r = simulate(
        gpt_run.id,
        "contains:cat",
        n_rate=60,
        n_eval=60,
        k=4,
        store=store,
        text_options={"max_tokens": 16},
        dpo=DPOConfig(steps=30, lr=1e-3),
    )
    res = r["results"]
    assert r["modality"] == "text" and "fid" not in res["baseline"] and "mean_chars" in res["baseline"]
    assert res["best_of_n"]["preferred_share"] > res["baseline"]["preferred_share"]
    assert res["finetune"]["method"] == "dpo" and res["finetune"]["margin_after"] > res["finetune"]["margin_before"]
    assert res["select"]["chosen"].split("@")[0] in (gpt_run.id, res["finetune"]["run_id"])


CONVO = [{"role": "system", "content": "sum"}, {"role": "user", "content": "2+3"}]


def test_dpo_on_chat_pairs_scores_the_reply_and_its_end_of_turn(tmp_path: Path) -> None:
    import json

    from genloop.feedback.optimize import encode_chat_reply
    from genloop.modalities.text.chat import ChatTemplate

    data = tmp_path / "chat.jsonl"
    rows = [{"messages": [*CONVO, {"role": "assistant", "content": "5"}]}, {"prompt": "1+1", "response": "2"}]
    data.write_text("\n".join(json.dumps(r) for r in rows * 12) + "\n", encoding="utf-8")
    run = genloop.train("gpt", data=str(data), overrides=[*TINY_GPT, "model.block_size=96"], steps=5, progress=False)
    system, _ = load_system(run.dir)
    template = ChatTemplate(system.tokenizer)
    # exactly what chat training scores: the reply's tokens and its end-of-turn marker, after the same context
    ids, mask = template.encode([*CONVO, {"role": "assistant", "content": "5"}])
    enc, start = encode_chat_reply(template, CONVO, "5", 96)
    scored = [i for i, m in enumerate(mask) if m]
    assert enc == ids[: scored[-1] + 1].tolist() and start == scored[0]

    pairs = [(CONVO, "5", "7"), ([{"role": "user", "content": "1+1"}], "2", "3")] * 4
    r = dpo(run.id, pairs, DPOConfig(beta=0.1, steps=8, lr=1e-3, seed=0))
    assert r["margin_after"] > r["margin_before"] and r["loss_last"] < r["loss_first"]
    assert genloop.load(r["run_id"]).chat(CONVO, seed=0, max_tokens=4) is not None
