"""The feedback store's data out to TRL's JSONL formats, and the store's bulk feedback path; no model needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genloop.errors import ConfigError, DataError, NotFoundError
from genloop.feedback.export import export, label_of
from genloop.feedback.store import FeedbackStore
from genloop.generation.pipelines import ImageOutput
from genloop.generation.text_pipeline import TextOutput


def text_output(texts: list[str], prompt: str = "Once") -> TextOutput:
    return TextOutput(texts, prompt, {"run_id": "r-text", "model": "gpt", "seed": 0, "checkpoint_sha256": "x"})


@pytest.fixture()
def store(tmp_path: Path) -> FeedbackStore:
    return FeedbackStore(url=f"sqlite:///{tmp_path / 'studio.sqlite'}", media_dir=tmp_path / "media")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_text_pairs_and_unpaired(store: FeedbackStore, tmp_path: Path) -> None:
    a, b, c, d = store.add_outputs(text_output([" upon a time", " more", " again ✓", " never"]))
    store.prefer(a, b)
    store.prefer(c, d, user="bob")
    store.rate(a, stars=5)
    store.rate(b, stars=1)
    store.rate(c, stars=3)  # neither: skipped
    store.rate(d, thumbs=1, stars=2)  # thumbs decide
    store.rate(d, thumbs=-1)
    r = export(store, tmp_path / "pairs.jsonl", "trl-pairs")
    assert r["written"] == 2 and r["skipped"] == 0
    assert read(tmp_path / "pairs.jsonl") == [
        {"prompt": "Once", "chosen": " upon a time", "rejected": " more"},
        {"prompt": "Once", "chosen": " again ✓", "rejected": " never"},
    ]
    r = export(store, tmp_path / "kto.jsonl", "trl-unpaired")
    assert r["written"] == 4 and r["skipped"] == 1
    rows = read(tmp_path / "kto.jsonl")
    assert [(x["completion"], x["label"]) for x in rows] == [
        (" upon a time", True),
        (" more", False),
        (" never", True),
        (" never", False),
    ]
    assert all(set(x) == {"prompt", "completion", "label"} and x["prompt"] == "Once" for x in rows)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic: no temp files left


def test_image_pairs_are_file_paths_with_the_condition_as_prompt(store: FeedbackStore, tmp_path: Path) -> None:
    x = torch.linspace(-1, 1, 2 * 64).reshape(2, 1, 8, 8)
    out = ImageOutput(x, {"run_id": "r-img", "model": "cgan", "seed": 5}, torch.tensor([7, 7]))
    a, b = store.add_outputs(out)
    store.prefer(b, a)
    store.rate(a, stars=4)
    export(store, tmp_path / "img.jsonl", "trl-pairs")
    [row] = read(tmp_path / "img.jsonl")
    assert row["prompt"] == "class 7" and Path(row["chosen"]).is_file() and row["chosen"].endswith(f"{b}.png")
    assert Path(row["rejected"]).name == f"{a}.png"
    export(store, tmp_path / "img_kto.jsonl", "trl-unpaired")
    assert read(tmp_path / "img_kto.jsonl")[0]["label"] is True


def test_labels_and_bad_input(store: FeedbackStore, tmp_path: Path) -> None:
    assert [label_of(None, s) for s in (1, 2, 3, 4, 5)] == [False, False, None, True, True]
    assert label_of(-1, 5) is False and label_of(1, None) is True
    with pytest.raises(DataError, match="nothing to export"):
        export(store, tmp_path / "e.jsonl", "trl-pairs")
    with pytest.raises(ConfigError, match="unknown export format"):
        export(store, tmp_path / "e.jsonl", "csv")
    [a] = store.add_outputs(text_output(["x"]))
    with pytest.raises(ConfigError, match="stars must be an integer from 1 to 5, got 7"):
        store.rate(a, stars=7)
    with pytest.raises(NotFoundError, match="no generation 'nope'"):
        store.rate("nope", stars=4)
    with pytest.raises(NotFoundError, match="no generation 'nope'"):
        store.add_feedback([{"generation_id": "nope", "stars": 3}])
    with pytest.raises(ConfigError, match="stars must be"):
        store.add_feedback([{"generation_id": a, "stars": 0}])
    assert store.ratings() == []  # the bad batch wrote nothing


def test_bulk_feedback_and_filters(store: FeedbackStore) -> None:
    ids = store.add_outputs(text_output(["a", "b", "c"]), job_id="job1")
    other = store.add_outputs(text_output(["z"]))
    assert store.add_feedback(
        [{"generation_id": i, "stars": 3 + n} for n, i in enumerate(ids)], [(ids[2], ids[0])], user="sim"
    ) == (3, 1)
    store.rate(other[0], thumbs=1)
    ratings, prefs, gens = store.feedback_rows(job_id="job1")
    assert len(ratings) == 3 and len(prefs) == 1 and set(gens) == set(ids)
    assert len(store.feedback_rows()[0]) == 4 and len(store.feedback_rows(user="sim")[0]) == 3


def chat_output(texts: list[str], messages: list[dict[str, str]]) -> TextOutput:
    out = TextOutput(texts, "<rendered>", {"run_id": "r-chat", "model": "gpt", "seed": 0, "checkpoint_sha256": "x"})
    recipe_of = out.recipe_of
    out.recipe_of = lambda i: {**recipe_of(i), "messages": messages}  # as the server's chat completions store it
    return out


def test_chat_replies_export_in_trl_conversational_format(store: FeedbackStore, tmp_path: Path) -> None:
    convo = [{"role": "system", "content": "sum"}, {"role": "user", "content": "2+3"}]
    a, b = store.add_outputs(chat_output(["5", "6"], convo))
    [c] = store.add_outputs(chat_output(["7"], [{"role": "user", "content": "3+4"}]))
    [plain] = store.add_outputs(text_output(["x"]))
    store.prefer(b, a)
    store.prefer(c, a)  # replies to two different conversations: no one prompt
    store.prefer(plain, a)  # a chat reply against a plain completion: neither
    store.rate(a, thumbs=1)
    r = export(store, tmp_path / "pairs.jsonl", "trl-pairs")
    assert r["written"] == 1 and r["skipped"] == 2
    assert read(tmp_path / "pairs.jsonl") == [
        {
            "prompt": convo,
            "chosen": [{"role": "assistant", "content": "6"}],
            "rejected": [{"role": "assistant", "content": "5"}],
        }
    ]
    export(store, tmp_path / "kto.jsonl", "trl-unpaired")
    assert read(tmp_path / "kto.jsonl") == [
        {"prompt": convo, "completion": [{"role": "assistant", "content": "5"}], "label": True}
    ]


def test_dpo_pairs_of_chat_replies_carry_their_conversation(store: FeedbackStore) -> None:
    from genloop.feedback.optimize import preference_pairs

    convo = [{"role": "user", "content": "2+3"}]
    a, b = store.add_outputs(chat_output(["5", "6"], convo))
    [c] = store.add_outputs(chat_output(["7"], [{"role": "user", "content": "3+4"}]))
    store.prefer(a, b)
    store.prefer(c, a)  # two conversations: the chosen reply's rendered prompt, as for plain completions
    assert preference_pairs(store) == [(convo, "5", "6"), ("<rendered>", "7", "5")]
