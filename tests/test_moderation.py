"""Moderation (genloop.safety.moderation): rules in English and Chinese, allow/flag/block with the rule that
fired, the log, rule files, the hooks, and enforcement in the Python API, the CLI and the server (also through
the official openai client). A tiny GPT trained once per module serves the end-to-end checks."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import cli
from fastapi.testclient import TestClient
from studio_support import TEXT, TINY_GPT, WorkerThread

import genloop
from genloop import errors
from genloop.errors import ConfigError, GenLoopError
from genloop.safety import moderation
from genloop.safety.moderation import ModerationBlocked, Moderator

BLOCKED = "I will kill you tomorrow"
BLOCKED_ZH = "我要杀了你"


@pytest.fixture(autouse=True)
def no_hooks() -> Iterator[None]:
    moderation.clear_hooks()
    yield
    moderation.clear_hooks()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- rules ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, rule",
    [
        ("i will kill you", "en-violence-threat"),
        ("I WILL KILL YOU", "en-violence-threat"),
        ("ｉ ｗｉｌｌ ｋｉｌｌ ｙｏｕ", "en-violence-threat"),  # fullwidth letters and ideographic spaces
        ("i will ki\u200bll\u200d you", "en-violence-threat"),  # zero-width characters inside
        ("i will k i l l you", "en-violence-threat"),  # spelt out
        ("Kill   You!", "en-violence-threat"),
        ("他说我要杀了你。", "zh-violence-threat"),  # a Chinese substring, no spaces around it
        ("我要殺了你", None),  # traditional 殺 is a different character: not in the built-in list
        ("怎么自杀？", "zh-self-harm-instructions"),
        ("how to commit suicide", "en-self-harm-instructions"),
        ("the skill you need", None),  # 'kill' only as a whole word
        ("skilled youth", None),
        ("the quick brown fox", None),
    ],
)
def test_built_in_rules_in_both_languages(text: str, rule: str | None) -> None:
    d = Moderator().check(text)
    assert (d.rule_id, d.action) == ((rule, "block") if rule else (None, "allow"))


def test_decisions_name_the_rule_and_the_span() -> None:
    m = Moderator()
    d = m.check("a murder mystery")
    assert (
        d.action == "flag"
        and d.allowed
        and d.rule
        == {
            "id": "en-violence-murder",
            "category": "violence-threat",
            "span": [2, 8],
            "match": "murder",
        }
    )
    d = m.check("a murder: I will kill you")  # block beats flag; the flag is kept as another rule
    assert d.action == "block" and not d.allowed and d.rule_id == "en-violence-threat"
    assert [r["id"] for r in d.others] == ["en-violence-murder"]
    assert "rule en-violence-threat" in d.reason and "violence-threat" in d.reason
    assert moderation.tail("x" * 300 + " skill", 8) == " skill"  # a stream's re-check never cuts a word shorter
    assert m.check(moderation.tail("a" * 300 + "skill you", 12)).action == "allow"
    zh = m.check("这是一部谋杀小说")
    assert zh.action == "flag" and zh.match == "谋杀" and zh.span == (4, 6)


def test_regex_and_user_word_rules(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(
        "rules:\n"
        "  - {id: card, category: pii, action: flag, regex: '\\b\\d{4}-\\d{4}-\\d{4}-\\d{4}\\b'}\n"
        "  - {id: secret, category: leak, action: block, words: ['project falcon', '猎鹰计划']}\n",
        encoding="utf-8",
    )
    m = Moderator(rule_files=[f])
    assert m.check("card 1234-5678-9012-3456 ok").rule == {
        "id": "card",
        "category": "pii",
        "span": [5, 24],
        "match": "1234-5678-9012-3456",
    }
    assert m.check("Project  FALCON starts").rule_id == "secret"
    assert m.check("关于猎鹰计划的文件").rule_id == "secret"
    assert m.check("project falconry").action == "allow"
    out_only = Moderator(rules=[], rule_files=[_write(tmp_path / "o.yaml", "[{id: o, regex: x, targets: output}]")])
    assert out_only.check("x", "prompt").action == "allow" and out_only.check("x", "output").action == "block"
    assert m.check(BLOCKED).rule_id == "en-violence-threat"  # the built-in list is still there
    f.write_text("replace_defaults: true\nrules: [{id: x, words: [zebra]}]\n", encoding="utf-8")
    only = Moderator(rule_files=[f])
    assert only.check(BLOCKED).action == "allow" and only.check("a Zebra").action == "block"


def test_txt_and_json_rule_files(tmp_path: Path) -> None:
    txt = tmp_path / "words.txt"
    txt.write_text("# my list\nbanana split\nfood:flag:durian\nre:\\bx{3,}\\b\n禁词\n", encoding="utf-8")
    m = Moderator(rules=[], rule_files=[txt])
    assert m.check("a Banana Split").action == "block"
    assert m.check("durian!").action == "flag" and m.check("durian").category == "food"
    assert m.check("xxxx").action == "block" and m.check("这是禁词").action == "block"
    assert m.check("bananas").action == "allow"
    js = tmp_path / "r.json"
    js.write_text(json.dumps([{"id": "j", "category": "c", "action": "flag", "words": ["kiwi"]}]), encoding="utf-8")
    assert Moderator(rule_files=[js]).check("KIWI").rule_id == "j"


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("bad.yaml", "rules: [{id: r1, regex: '(unclosed'}]", "rule r1: bad regex"),
        ("bad.yaml", "rules: [{id: r2, action: delete, words: [x]}]", "rule r2: unknown action 'delete'"),
        ("bad.yaml", "rules: [{id: r3, category: c}]", "rule r3 has neither words nor a regex"),
        ("bad.yaml", "rules: [unclosed", "not valid YAML"),
        ("bad.json", "{", "not valid JSON"),
        ("bad.txt", "c:allow:word", "unknown action 'allow'"),
        ("bad.csv", "x", "unknown file type"),
    ],
)
def test_a_bad_rule_file_is_one_config_error_line(tmp_path: Path, name: str, content: str, words: str) -> None:
    f = tmp_path / name
    f.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        Moderator(rule_files=[f])
    assert words in str(e.value) and str(f) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="cannot read"):
        Moderator(rule_files=[tmp_path / "missing.yaml"])


# --- the log -------------------------------------------------------------------------------------------
def test_every_decision_is_one_log_line_without_the_blocked_text(tmp_path: Path) -> None:
    m = Moderator()
    long_blocked = BLOCKED + " " + "and then some more words " * 10
    m.check("hello there", "prompt", "gen-1", tmp_path)
    m.check(long_blocked, "prompt", "gen-2", tmp_path)
    m.check("a murder", "output", "gen-3", tmp_path)
    lines = (tmp_path / "moderation.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(x) for x in lines]
    assert [(r["request_id"], r["target"], r["action"]) for r in rows] == [
        ("gen-1", "prompt", "allow"),
        ("gen-2", "prompt", "block"),
        ("gen-3", "output", "flag"),
    ]
    blocked = rows[1]
    assert blocked["rule"]["id"] == "en-violence-threat" and blocked["rule"]["span"] == [0, 15]
    assert long_blocked not in lines[1] and len(blocked["excerpt"]) <= moderation.EXCERPT_CHARS + 1
    import hashlib

    assert blocked["sha256"] == hashlib.sha256(long_blocked.encode()).hexdigest() and blocked["time"].endswith("Z")
    Moderator(log_text="hash").check(BLOCKED, "prompt", "gen-4", tmp_path)
    Moderator(log_text="full").check(BLOCKED, "prompt", "gen-5", tmp_path)
    four, five = moderation.read_log(tmp_path)[-2:]
    assert "excerpt" not in four and "text" not in four and five["text"] == BLOCKED
    with pytest.raises(ConfigError, match="GENLOOP_MODERATION_LOG_TEXT"):
        Moderator(log_text="everything")


# --- hooks ---------------------------------------------------------------------------------------------
def test_classifier_hook() -> None:
    seen: list[str] = []

    def clf(text: str) -> list[tuple[str, float]]:
        seen.append(text)
        return [("toxicity", 0.9 if "meanie" in text else 0.1), ("spam", 0.6)]

    moderation.register_text_classifier(clf, threshold=0.8, categories=["toxicity"])
    moderation.register_text_classifier(lambda t: [("spam", 0.6)], threshold=0.5, action="flag")
    m = Moderator()
    d = m.check("you meanie")
    assert d.action == "block" and d.rule == {"id": "classifier:toxicity", "category": "toxicity", "score": 0.9}
    assert "score 0.90" in d.reason
    assert m.check("hello").action == "flag" and m.check("hello").category == "spam"
    assert seen[0] == "you meanie"
    moderation.clear_hooks()
    assert m.check("you meanie").action == "allow"
    with pytest.raises(ConfigError):
        moderation.register_text_classifier(clf, action="delete")


def test_image_check_hook() -> None:
    from genloop.generation.pipelines import ImageOutput, moderate_images

    images = torch.zeros(3, 1, 4, 4)
    images[1] += 0.9  # a "bright" image the check blocks
    images[2] -= 0.5
    out = ImageOutput(images.clone(), {"seed": 0, "n": 3})
    assert moderate_images(out).moderation == {}  # no check registered: untouched
    moderation.register_image_check(
        lambda img: "block" if img.mean() > 0.5 else (("flag", "dark") if img.mean() < -0.2 else None)
    )
    out = moderate_images(out)
    assert torch.all(out.tensors[1] == -1) and torch.equal(out.tensors[0], images[0])
    assert out.recipe_of(1)["moderation"]["action"] == "block"
    assert out.recipe_of(2)["moderation"]["rule"]["category"] == "dark" and "moderation" not in out.recipe_of(0)


# --- a tiny GPT: the API, the CLI, the server --------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("moderation")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    run = genloop.train(
        "gpt", str(root / "corpus.txt"), overrides=TINY_GPT, steps=5, runs_dir=root / "runs", progress=False
    )
    return root / "runs", run.id


@pytest.fixture
def words_blocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A rule that blocks any text at all: every output of the tiny GPT (prompts pass)."""
    f = tmp_path / "any-word.yaml"
    f.write_text(
        "rules: [{id: any-word, category: test, action: block, regex: '.', targets: [output]}]\n", encoding="utf-8"
    )
    monkeypatch.setenv("GENLOOP_MODERATION_RULES", str(f))
    return f


def test_the_api_raises_on_a_blocked_prompt_and_logs_it(gpt: tuple[Path, str]) -> None:
    runs, run_id = gpt
    pipe = genloop.load(run_id, runs_dir=runs)
    with pytest.raises(ModerationBlocked) as e:
        pipe(prompt=BLOCKED, max_tokens=4, request_id="req-test-1")
    assert isinstance(e.value, GenLoopError) and "rule en-violence-threat" in str(e.value)
    assert ModerationBlocked is errors.ModerationBlocked  # also importable from genloop.errors
    assert e.value.decision.category == "violence-threat"
    with pytest.raises(ModerationBlocked):
        pipe.complete(BLOCKED_ZH, max_tokens=4)
    row = [r for r in moderation.read_log(runs) if r["request_id"] == "req-test-1"]
    assert row and row[0]["action"] == "block" and row[0]["target"] == "prompt" and BLOCKED not in json.dumps(row)
    ok = pipe(prompt="The quick", max_tokens=4, seed=1, request_id="req-test-2")
    assert "moderation" not in ok.recipe_of(0)
    logged = {(r["target"], r["action"]) for r in moderation.read_log(runs) if r["request_id"] == "req-test-2"}
    assert logged == {("prompt", "allow"), ("output", "allow")}
    flagged = pipe(prompt="a murder", max_tokens=4, seed=1)
    assert flagged.recipe_of(0)["moderation"]["action"] == "flag"
    assert flagged.recipe_of(0)["moderation"]["rule"]["id"] == "en-violence-murder"


def test_a_blocked_output_is_withheld(gpt: tuple[Path, str], words_blocked: Path) -> None:
    runs, run_id = gpt
    pipe = genloop.load(run_id, runs_dir=runs)
    out = pipe(prompt="The", max_tokens=8, seed=0, n=2, temperature=0.5)
    assert out.texts == ["", ""] and out.recipe_of(1)["moderation"]["rule"]["id"] == "any-word"
    _, done = pipe.complete("The", max_tokens=8, seed=0)
    assert done[0].text == "" and done[0].finish_reason == "content_filter"
    assert "".join(pipe(prompt="The", max_tokens=8, seed=0, stream=True)) == ""  # a stream stops before it


def test_moderation_off_lets_everything_through(gpt: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    runs, run_id = gpt
    monkeypatch.setenv("GENLOOP_MODERATION", "off")
    before = len(moderation.read_log(runs))
    out = genloop.load(run_id, runs_dir=runs)(prompt=BLOCKED, max_tokens=4)
    assert out.prompt == BLOCKED and "moderation" not in out.recipe_of(0)
    assert len(moderation.read_log(runs)) == before  # nothing checked, nothing logged


def test_cli_blocked_prompt(gpt: tuple[Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    runs, run_id = gpt
    code, out, err = cli(capsys, "generate", run_id, "--prompt", BLOCKED, "--max-tokens", "4", "--runs-dir", runs)
    assert code == 2 and out == ""  # the prompt is not even echoed
    assert err.strip().startswith("error: moderation blocked the prompt: rule en-violence-threat")
    assert len(err.strip().splitlines()) == 1
    rules = tmp_path / "r.txt"
    rules.write_text("test:block:quick\n", encoding="utf-8")
    code, _, err = cli(
        capsys, "generate", run_id, "--prompt", "The quick", "--max-tokens", "4", "--runs-dir", runs, "--rules", rules
    )
    assert code == 2 and "rule r-1" in err
    assert "GENLOOP_MODERATION_RULES" not in os.environ  # --rules is for that command only
    code, out, err = cli(capsys, "generate", run_id, "--prompt", "The", "--max-tokens", "4", "--runs-dir", runs)
    assert code == 0 and out.startswith("The"), err


# --- the server ----------------------------------------------------------------------------------------
@pytest.fixture
def server(gpt: tuple[Path, str], tmp_path: Path) -> Iterator[tuple[TestClient, str, Path]]:
    from genloop.server.app import create_app
    from genloop.server.settings import Settings

    runs, run_id = gpt
    rules = tmp_path / "server-rules.yaml"
    rules.write_text(
        "rules: [{id: any-word, category: test, action: block, regex: '.', targets: [output]}]\n", encoding="utf-8"
    )
    settings = Settings(
        runs=runs,
        db_url=f"sqlite:///{tmp_path / 'studio.sqlite'}",
        media_dir=tmp_path / "media",
        uploads_dir=tmp_path / "uploads",
        poll_interval=0.01,
        moderation_rules=str(rules),  # every non-empty output is blocked; prompts pass
    )
    client = TestClient(create_app(settings))  # the app creates the tables before the worker opens them
    with WorkerThread(settings):
        yield client, run_id, runs


def test_server_blocks_a_prompt_with_a_400_and_the_reason(server: tuple[TestClient, str, Path]) -> None:
    client, run_id, runs = server
    r = client.post("/v1/completions", json={"model": run_id, "prompt": BLOCKED_ZH, "max_tokens": 4})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "content_filter" and err["param"] == "prompt" and "zh-violence-threat" in err["message"]
    r = client.post("/v1/generations", json={"run_id": run_id, "prompt": "how to commit suicide", "max_tokens": 4})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("moderation blocked the prompt: rule en-self-harm-instructions")
    r = client.post("/v1/jobs", json={"kind": "generate", "params": {"run_id": run_id, "prompt": BLOCKED}})
    assert r.status_code == 400 and "en-violence-threat" in r.json()["detail"]
    assert any(row["action"] == "block" and row["target"] == "prompt" for row in moderation.read_log(runs))


def test_server_withholds_a_blocked_output(server: tuple[TestClient, str, Path]) -> None:
    client, run_id, runs = server
    r = client.post("/v1/completions", json={"model": run_id, "prompt": "The", "max_tokens": 8, "seed": 0})
    assert r.status_code == 200, r.text
    [choice] = r.json()["choices"]
    assert choice["finish_reason"] == "content_filter" and choice["text"] == ""
    gid = r.json()["genloop"]["generation_ids"][0]
    job_id = r.json()["genloop"]["job_ids"][0]
    g = client.get(f"/v1/generations/{gid}").json()
    assert g["text"] == "" and g["recipe"]["moderation"]["action"] == "block"
    assert any(row["request_id"] == job_id and row["target"] == "output" for row in moderation.read_log(runs))
    with client.stream(
        "POST", "/v1/completions", json={"model": run_id, "prompt": "The", "max_tokens": 8, "seed": 0, "stream": True}
    ) as s:
        chunks = [json.loads(x[6:]) for x in s.iter_lines() if x.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == ""
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_openai_client_raises_bad_request(server: tuple[TestClient, str, Path]) -> None:
    openai = pytest.importorskip("openai")
    client, run_id, _ = server
    oa = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", max_retries=0, http_client=client)
    with pytest.raises(openai.BadRequestError) as e:
        oa.completions.create(model=run_id, prompt=BLOCKED, max_tokens=4)
    assert e.value.code == "content_filter" and "en-violence-threat" in str(e.value)
    c = oa.completions.create(model=run_id, prompt="The", max_tokens=4, seed=0)
    assert c.choices[0].finish_reason == "content_filter" and c.choices[0].text == ""


def test_server_moderation_off(gpt: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genloop.server.app import create_app
    from genloop.server.settings import Settings

    runs, run_id = gpt
    monkeypatch.setenv("GENLOOP_MODERATION", "off")
    settings = Settings(
        runs=runs, db_url=f"sqlite:///{tmp_path / 's.sqlite'}", media_dir=tmp_path / "m", poll_interval=0.01
    )
    assert settings.moderation is False
    client = TestClient(create_app(settings))
    with WorkerThread(settings):
        r = client.post("/v1/completions", json={"model": run_id, "prompt": BLOCKED, "max_tokens": 4, "seed": 1})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    with pytest.raises(ConfigError, match="bad regex"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("rules: [{id: b, regex: '('}]", encoding="utf-8")
        Settings(runs=runs, moderation_rules=str(bad), moderation=True).check()


def test_cli_names_withheld_texts_and_marks_their_recipes(
    gpt: tuple[Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    runs, run_id = gpt
    rules = _write(tmp_path / "out.yaml", "[{id: any-out, category: test, regex: '.', targets: [output]}]")
    args = ["generate", run_id, "--prompt", "The", "-n", "2", "--max-tokens", "6", "--runs-dir", runs]
    code, out, err = cli(capsys, *args, "--rules", rules, "--out", tmp_path / "gen")
    assert code == 0, err
    assert "moderation: text 0 withheld (rule any-out, category test)" in err
    records = [json.loads(x) for x in (tmp_path / "gen" / "texts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == ["", ""]
    assert all(r["recipe"]["moderation"]["rule"]["id"] == "any-out" for r in records)


def test_chat_completions_are_moderated_too(server: tuple[TestClient, str, Path]) -> None:
    """/v1/chat/completions: a blocked user message is the same 400; a blocked reply is withheld, as OpenAI does."""
    openai = pytest.importorskip("openai")
    client, run_id, _ = server
    oa = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", max_retries=0, http_client=client)
    with pytest.raises(openai.BadRequestError) as e:
        oa.chat.completions.create(model=run_id, messages=[{"role": "user", "content": BLOCKED}], max_tokens=4)
    assert e.value.code == "content_filter" and "en-violence-threat" in str(e.value)
    c = oa.chat.completions.create(model=run_id, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, seed=0)
    assert c.choices[0].finish_reason == "content_filter" and not c.choices[0].message.content
