"""Summarisation and data-to-text: task records become chat exchanges (loss on the target only), the templates
parse back, the metrics (ROUGE, field accuracy, length) and baselines (lead-k, template) are right on known
cases, a tiny task run summarises / reports through the API and the CLI, ``genloop eval`` scores its held-out
records, and every bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_GPT, cli

import genloop
from genloop.errors import ConfigError
from genloop.evaluation.text_tasks import (
    evaluate_data_to_text,
    evaluate_summaries,
    fields_stated,
    held_out_task_records,
    lead_k,
    rouge,
    template_text,
)
from genloop.modalities.text.chat import ChatTemplate, detect_format, record_messages
from genloop.modalities.text.tasks import (
    WORD_STEP,
    data_prompt,
    length_hint,
    parse_data,
    parse_summarize,
    summarize_prompt,
    task_of_prompt,
)
from genloop.modalities.text.tokenizers import CharTokenizer

TASK_GPT = [*TINY_GPT, "model.block_size=192", "train.warmup_steps=2", "train.lr=3e-3"]
TEAMS = ["Ash", "Elm", "Oak", "Yew", "Fir"]


def _match(i: int) -> dict[str, Any]:
    return {"home": TEAMS[i % 5], "away": TEAMS[(i + 2) % 5], "goals": i % 4, "day": ["Mon", "Sat"][i % 2]}


def _records(n: int = 16) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        m = _match(i)
        out.append(
            {
                "document": f"It rained. {m['home']} met {m['away']} on {m['day']}. {m['home']} scored {m['goals']}.",
                "summary": f"{m['home']} scored {m['goals']}.",
            }
        )
        out.append({"data": m, "text": f"{m['home']} hit {m['goals']} vs {m['away']} on {m['day']}."})
    return out


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def task_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tasks")
    data = _write(root / "tasks.jsonl", _records())
    run = genloop.train("gpt", str(data), overrides=TASK_GPT, steps=15, runs_dir=root / "runs", progress=False)
    return root, run


# --- records and templates ---------------------------------------------------------------------------------


def test_task_records_are_detected_as_chat_and_become_one_exchange(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.jsonl", _records(2))
    assert detect_format(path) == "chat"
    rows = _records(2)
    summ, data = record_messages(rows[0], "x"), record_messages(rows[1], "x")
    assert [m["role"] for m in summ] == ["user", "assistant"] and summ[1]["content"] == rows[0]["summary"]
    assert summ[0]["content"].startswith("Summarize") and rows[0]["document"] in summ[0]["content"]
    assert data[0]["content"] == data_prompt(rows[1]["data"]) and data[1]["content"] == rows[1]["text"]


def test_only_the_target_is_in_the_loss_mask() -> None:
    text = "a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9 : \n.,<|>"
    template = ChatTemplate(CharTokenizer.train(text + "SWmaribzedoutw"))
    rec = {"document": "a b c", "summary": "x y"}
    ids, mask = template.encode(record_messages(rec, "x"))
    decoded = template.tokenizer.decode(ids[mask.astype(bool)].tolist())
    assert decoded == "x y<|end|>"  # the summary and its end marker; not the instruction nor the document


def test_templates_parse_back() -> None:
    assert parse_summarize(summarize_prompt("One. Two.", 13)) == {"document": "One. Two.", "words": 12}
    assert parse_summarize(summarize_prompt("One.")) == {"document": "One.", "words": None}
    data = {"home": "Ash", "goals": 2, "scorers": ["A", "B"]}
    assert parse_data(data_prompt(data)) == {"data": {"home": "Ash", "goals": "2", "scorers": '["A","B"]'}}
    assert parse_summarize("hello") is None and parse_data("hello") is None and task_of_prompt("hi") is None
    assert length_hint(1) == WORD_STEP and length_hint(13) == 12 and length_hint(15) == 16


def test_length_hint_is_the_summary_length_on_most_records() -> None:
    rows = [r for r in _records(40) if "summary" in r]
    hinted = [parse_summarize(record_messages(r, "x")[0]["content"])["words"] for r in rows]
    assert 0 < sum(h is None for h in hinted) < len(rows) / 2  # a minority trains without a hint
    assert all(h == length_hint(len(r["summary"].split())) for h, r in zip(hinted, rows) if h is not None)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"document": "", "summary": "s"}, "'document' is empty"),
        ({"document": "d", "summary": 3}, "'summary' must be a string"),
        ({"data": [1, 2], "text": "t"}, "'data' must be a non-empty object"),
        ({"data": {}, "text": "t"}, "'data' must be a non-empty object"),
        ({"data": {"a": 1}, "text": " "}, "'text' is empty"),
        ({"summary": "s"}, "no task fields"),
    ],
)
def test_bad_task_records_are_one_line(record: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        record_messages(record, "f.jsonl:3")
    assert "\n" not in str(e.value) and "f.jsonl:3" in str(e.value)


@pytest.mark.parametrize("words", [0, -3, 2.5, True])
def test_bad_word_counts_are_refused(words: Any) -> None:
    with pytest.raises(ConfigError, match="words must be a positive whole number"):
        summarize_prompt("doc", words)


# --- metrics and baselines ---------------------------------------------------------------------------------


def test_rouge_and_baselines_on_known_cases() -> None:
    assert rouge(["the cat sat"], ["the cat sat"])["rougeL"] == pytest.approx(1.0)
    assert rouge(["dogs run"], ["the cat sat"])["rouge1"] == 0.0
    assert 0 < rouge(["the cat ran"], ["the cat sat"])["rouge2"] < 1
    assert lead_k("One. Two! Three? Four.", 2) == "One. Two!"
    data = {"home": "Ash", "attendance": 12000, "minute": 80}
    assert fields_stated(data, "Ash won at the 80th minute before 12,000 fans.") == (3, 3)
    assert fields_stated(data, "Ashford won at minute 800 before 1200 fans.") == (0, 3)  # whole words only
    assert fields_stated(data, template_text(data)) == (3, 3)


class _Echo:
    """A stand-in pipeline that answers with fixed texts, to check the evaluators' arithmetic."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def summarize(self, document: str, words: int | None = None, **_: Any) -> str:
        return self.answers[document]

    def data_to_text(self, data: dict[str, Any], **_: Any) -> str:
        return self.answers[json.dumps(data)]


def test_evaluators_score_perfect_outputs_perfectly_and_report_baselines() -> None:
    rows = _records(6)
    summ = [r for r in rows if "summary" in r]
    data = [r for r in rows if "data" in r]
    r = evaluate_summaries(_Echo({x["document"]: x["summary"] for x in summ}), summ)
    assert r["model"]["rougeL"] == pytest.approx(1.0) and r["lead_k"]["rougeL"] < 1.0 and 1 <= r["lead_k"]["k"] <= 5
    assert r["model"]["words_off_mean"] <= WORD_STEP / 2
    d = evaluate_data_to_text(_Echo({json.dumps(x["data"]): x["text"] for x in data}), data)
    assert d["model"]["field_accuracy"] == 1.0 and d["template"]["field_accuracy"] == 1.0
    assert d["model"]["rougeL"] == pytest.approx(1.0) and d["template"]["rougeL"] < 0.9
    bad = evaluate_data_to_text(_Echo({json.dumps(x["data"]): "nothing here" for x in data}), data)
    assert bad["model"]["field_accuracy"] == 0.0
    with pytest.raises(ConfigError, match="not a summarize record"):
        evaluate_summaries(_Echo({}), data)


def test_held_out_records_are_rebuilt_from_conversations() -> None:
    rows = _records(3)
    convs = [record_messages(r, "x") for r in rows] + [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    ]
    got = held_out_task_records(convs, limit=2)
    assert [r["summary"] for r in got["summarize"]] == [rows[0]["summary"], rows[2]["summary"]]
    assert got["data-to-text"][0] == {"data": {k: str(v) for k, v in rows[1]["data"].items()}, "text": rows[1]["text"]}


# --- a tiny run end to end ---------------------------------------------------------------------------------


def test_a_task_run_summarizes_and_reports(task_run: tuple[Path, Any]) -> None:
    root, run = task_run
    pipe = genloop.load(run.id, runs_dir=root / "runs")
    a = pipe.summarize("It rained. Ash met Oak on Sat.", words=4, max_tokens=12)
    assert isinstance(a, str) and a == pipe.summarize("It rained. Ash met Oak on Sat.", words=4, max_tokens=12)
    b = pipe.data_to_text({"home": "Ash", "goals": 1}, max_tokens=12)
    assert isinstance(b, str)


def test_eval_scores_held_out_task_records(task_run: tuple[Path, Any]) -> None:
    root, run = task_run
    r = genloop.evaluate(run.id, n=2, runs_dir=root / "runs")
    tasks = r["tasks"]
    assert set(tasks) <= {"summarize", "data-to-text"} and tasks
    for t in tasks.values():
        assert t["examples"] >= 1 and np.isfinite(t["model"][t["headline"]])


def test_cli_summarize_and_data_to_text(task_run: tuple[Path, Any], capsys: Any, tmp_path: Path) -> None:
    root, run = task_run
    runs = ["--runs-dir", str(root / "runs"), "--max-tokens", "8"]
    doc = tmp_path / "doc.txt"
    doc.write_text("It rained. Ash met Oak on Sat.", encoding="utf-8")
    code, out, err = cli(capsys, "summarize", run.id, doc, "--words", "4", *runs)
    assert code == 0, err
    batch = _write(tmp_path / "docs.jsonl", [{"document": "Ash met Oak."}, {"document": "Elm met Yew."}])
    code, out, err = cli(capsys, "summarize", run.id, batch, *runs)
    assert code == 0 and len(out.strip().splitlines()) == 2 and all(json.loads(x) is not None for x in out.split())
    data = tmp_path / "m.json"
    data.write_text(json.dumps({"home": "Ash", "goals": 2}), encoding="utf-8")
    code, out, err = cli(capsys, "data-to-text", run.id, data, *runs)
    assert code == 0, err
    data.write_text("[1, 2]", encoding="utf-8")
    code, _, err = cli(capsys, "data-to-text", run.id, data, *runs)
    assert code == 2 and "must be a JSON object of fields" in err
    code, _, err = cli(capsys, "summarize", run.id, tmp_path / "missing.txt", *runs)
    assert code == 2 and "no such file" in err
    code, _, err = cli(capsys, "summarize", run.id, doc, "--words", "0", *runs)
    assert code == 2 and "words must be a positive whole number" in err
