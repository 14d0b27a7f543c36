"""Classical Chinese poetry: the four forms and their constraint, the rhyme/tone/form metrics on real Tang poems,
and the loop end to end (train on poems, ``pipe(..., constraint=poem_constraint(...))``, ``genloop generate
--form --acrostic``, ``genloop eval --form``).

The poems are public-domain Tang poems (simplified characters), written out here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import TINY_GPT, cli

import genloop
from genloop.errors import ConfigError, DataError
from genloop.evaluation.poetry_metrics import (
    chance_rhyme_rate,
    form_templates,
    poem_scores,
    poetry_report,
    rhyme_class,
    rhymes,
    tone_agreement,
)
from genloop.modalities.text.poetry import (
    FORMS,
    RHYME_NOTE,
    form_of,
    form_pattern,
    is_form,
    poem_constraint,
    poem_document,
    poem_lines,
    regular_poem,
    rhymes_level,
    title_prompt,
)

pytest.importorskip("pypinyin")

# title -> poem, in the layout: couplets "line，line。" joined by newlines
TANG = {
    "静夜思": "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。",
    "春晓": "春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。",
    "登鹳雀楼": "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。",
    "相思": "红豆生南国，春来发几枝。\n愿君多采撷，此物最相思。",
    "鹿柴": "空山不见人，但闻人语响。\n返景入深林，复照青苔上。",
    "江雪": "千山鸟飞绝，万径人踪灭。\n孤舟蓑笠翁，独钓寒江雪。",
    "悯农": "锄禾日当午，汗滴禾下土。\n谁知盘中餐，粒粒皆辛苦。",
    "寻隐者不遇": "松下问童子，言师采药去。\n只在此山中，云深不知处。",
    "竹里馆": "独坐幽篁里，弹琴复长啸。\n深林人不知，明月来相照。",
    "登乐游原": "向晚意不适，驱车登古原。\n夕阳无限好，只是近黄昏。",
    "送灵澈上人": "苍苍竹林寺，杳杳钟声晚。\n荷笠带斜阳，青山独归远。",
    "八阵图": "功盖三分国，名成八阵图。\n江流石不转，遗恨失吞吴。",
    "早发白帝城": "朝辞白帝彩云间，千里江陵一日还。\n两岸猿声啼不住，轻舟已过万重山。",
    "凉州词": "黄河远上白云间，一片孤城万仞山。\n羌笛何须怨杨柳，春风不度玉门关。",
    "出塞": "秦时明月汉时关，万里长征人未还。\n但使龙城飞将在，不教胡马度阴山。",
    "枫桥夜泊": "月落乌啼霜满天，江枫渔火对愁眠。\n姑苏城外寒山寺，夜半钟声到客船。",
    "黄鹤楼送孟浩然之广陵": "故人西辞黄鹤楼，烟花三月下扬州。\n孤帆远影碧空尽，唯见长江天际流。",
    "春望": "国破山河在，城春草木深。\n感时花溅泪，恨别鸟惊心。\n烽火连三月，家书抵万金。\n白头搔更短，浑欲不胜簪。",
    "山居秋暝": "空山新雨后，天气晚来秋。\n明月松间照，清泉石上流。\n"
    "竹喧归浣女，莲动下渔舟。\n随意春芳歇，王孙自可留。",
    "登高": "风急天高猿啸哀，渚清沙白鸟飞回。\n无边落木萧萧下，不尽长江滚滚来。\n"
    "万里悲秋常作客，百年多病独登台。\n艰难苦恨繁霜鬓，潦倒新停浊酒杯。",
}
FORM_OF = {t: ("wujue" if i < 12 else "qijue" if i < 17 else "wulv" if i < 19 else "qilv") for i, t in enumerate(TANG)}
WUJUE = [p for t, p in TANG.items() if FORM_OF[t] == "wujue"]


# --- forms ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("title", list(TANG))
def test_real_poems_are_in_their_form(title: str) -> None:
    poem = TANG[title]
    assert form_of(poem).name == FORM_OF[title]
    assert is_form(poem, FORM_OF[title]) and not is_form(poem.replace("，", "。", 1), FORM_OF[title])
    assert len(poem) == FORMS[FORM_OF[title]].length
    assert regular_poem(poem.split("\n")) == (FORMS[FORM_OF[title]], poem)
    assert regular_poem(["".join(poem.split("\n"))]) == (FORMS[FORM_OF[title]], poem)  # two couplets, one paragraph


def test_form_pattern_layout_and_acrostic() -> None:
    assert len(poem_lines(TANG["登高"])) == 8 and all(len(x) == 7 for x in poem_lines(TANG["登高"]))
    assert not is_form("白日依山尽，黄河入海流。欲穷千里目，更上一层楼。", "wujue")  # couplets need their newline
    assert not is_form("白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。\n", "wujue")  # nothing after
    assert is_form(TANG["登鹳雀楼"], "wujue", acrostic="白黄欲更")
    assert not is_form(TANG["登鹳雀楼"], "wujue", acrostic="春夏秋冬")
    assert re.fullmatch(form_pattern("qilv", "一二三四五六七八"), TANG["登高"]) is None
    assert title_prompt("春夜") == "春夜\n" and title_prompt("") == ""
    assert poem_document("春晓", TANG["春晓"]) == "春晓\n" + TANG["春晓"]


@pytest.mark.parametrize(
    "form, acrostic, message",
    [
        ("sonnet", None, "unknown poem form 'sonnet'"),
        ("wujue", "春夏秋", "needs 4 Chinese characters"),
        ("wulv", "春夏秋冬", "needs 8 Chinese characters"),
        ("wujue", "abcd", "needs 4 Chinese characters"),
    ],
)
def test_bad_forms_and_acrostics_are_one_line(form: str, acrostic: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        poem_constraint(form, acrostic)


# --- metrics -------------------------------------------------------------------------------------------------
def test_rhyme_classes_of_known_rhymes() -> None:
    assert rhyme_class("黄河入海流") == rhyme_class("更上一层楼") == "油求"
    assert rhyme_class("疑是地上霜") == rhyme_class("低头思故乡") == "江阳"
    assert rhyme_class("万径人踪灭") == rhyme_class("独钓寒江雪") == "乜斜"
    assert rhymes(TANG["登鹳雀楼"]) and rhymes(TANG["春晓"]) and rhymes(TANG["早发白帝城"])
    # 登高 rhymes 回来台杯 in Middle Chinese (平水韵 十灰); modern Mandarin splits them into 灰堆 and 怀来: the
    # modern-reading limitation the real poems' floor measures
    assert not rhymes(TANG["登高"])
    scrambled = "白日依山尽，黄河入海流。\n欲穷千里目，更上一层天。"
    assert not rhymes(scrambled)


def test_tone_agreement_of_a_perfectly_regular_quatrain() -> None:
    assert tone_agreement(TANG["登鹳雀楼"], "wujue") == 1.0  # 仄仄平平仄，平平仄仄平。平平平仄仄，仄仄仄平平。
    assert tone_agreement(TANG["早发白帝城"], "qijue") >= 0.8
    assert tone_agreement(TANG["春晓"], "qijue") is None  # not that form
    broken = "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。".replace("河", "水").replace("层", "尺")
    assert tone_agreement(broken, "wujue") < 1.0


def test_templates_follow_the_standard_patterns() -> None:
    wujue = form_templates("wujue")
    assert "仄仄平平仄平平仄仄平平平平仄仄仄仄仄平平" in wujue and len(wujue) == 4
    qilv = form_templates("qilv")
    assert all(len(t) == 56 for t in qilv)
    assert qilv[0].startswith("平平仄仄平平仄仄仄平平仄仄平")


def test_scores_and_report_against_real_poems() -> None:
    scores = poem_scores(WUJUE + ["not a poem"], "wujue")
    assert scores["form_rate"] == pytest.approx(12 / 13) and scores["n_in_form"] == 12
    assert 0.5 <= scores["rhyme_rate"] <= 1.0 and 0.5 <= scores["tone_agreement"] <= 1.0
    assert chance_rhyme_rate(WUJUE) < 0.3 < scores["rhyme_rate"]  # unrelated line endings rarely rhyme
    assert chance_rhyme_rate(WUJUE[:1]) is None
    train = "\n".join(WUJUE[:6])
    r = poetry_report(WUJUE[:6], WUJUE[6:], train, "wujue")
    assert r["form_rate"] == r["form_rate_floor"] == 1.0
    assert r["copy_rate"] == 1.0 and r["copy_rate_floor"] == 0.0  # the samples are the training poems verbatim
    assert r["longest_span_mean"] == FORMS["wujue"].length == 25 and r["copy_threshold_chars"] == 12
    assert 0 < r["distinct_2"] <= 1 and "modern Mandarin" in r["readings"]
    with pytest.raises(DataError, match="no real"):
        poetry_report(WUJUE, [], train, "wujue")
    with pytest.raises(DataError, match="at least one text"):
        poem_scores([], "wujue")


# --- the loop end to end -------------------------------------------------------------------------------------
@pytest.fixture()
def poem_run(tmp_path: Path):
    path = tmp_path / "poems.jsonl"
    docs = [{"text": poem_document(t, p)} for t, p in TANG.items()]
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    overrides = [*TINY_GPT, "model.block_size=32", "data.val_fraction=0.3", "train.warmup_steps=2"]
    return genloop.train("gpt", data=str(path), overrides=overrides, steps=15, progress=False)


def test_pipeline_constrained_poems_match_over_many_seeds(poem_run) -> None:
    pipe = genloop.load(poem_run.id)
    c = poem_constraint("wujue")
    out = pipe(prompt=title_prompt("春夜"), n=30, seed=0, constraint=c, max_tokens=40)
    assert all(is_form(t, "wujue") for t in out.texts), out.texts
    assert out.recipe["constraint"] == {"kind": "regex", "pattern": c.pattern, "form": "wujue", "rhyme": RHYME_NOTE}
    # rhyme (the default): every sample's even lines end on one level-tone rhyme class, which the metric confirms
    assert all(rhymes_level(t, "wujue") and rhymes(t) for t in out.texts), out.texts
    again = pipe(prompt=title_prompt("春夜"), n=3, seed=0, constraint=c, max_tokens=40)
    assert again.texts == out.texts[:3]  # seeded
    acro = pipe(prompt="", n=10, seed=5, constraint=poem_constraint("qijue", "春江花月"), max_tokens=40)
    assert all(is_form(t, "qijue", "春江花月") for t in acro.texts)
    streamed = "".join(pipe(prompt="春夜\n", seed=3, stream=True, constraint=c, max_tokens=40))
    assert streamed == pipe(prompt="春夜\n", seed=3, constraint=c, max_tokens=40).text and is_form(streamed, "wujue")
    beam = pipe(prompt="春夜\n", num_beams=3, constraint=c, max_tokens=40).text
    assert is_form(beam, "wujue")
    plain = pipe(prompt="春夜\n", n=5, seed=0, constraint=form_pattern("wujue"), max_tokens=40)  # a pattern string
    assert all(is_form(t, "wujue") for t in plain.texts)
    with pytest.raises(ConfigError, match="no text this tokenizer can write"):
        pipe(prompt="", constraint=poem_constraint("wujue", "夏夏夏夏"))  # 夏 is in none of the poems
    with pytest.raises(ConfigError, match="constraint must be a regex pattern"):
        pipe(prompt="", constraint=42)


def test_rhyme_is_forced_only_when_asked(poem_run) -> None:
    """Without the rhyme mask a barely trained model's line ends rhyme by chance (about one poem in seven), so
    30 samples that all rhyme would fail this test if the mask did nothing; with ``rhyme=False`` they do not."""
    pipe = genloop.load(poem_run.id)
    free_form = poem_constraint("wujue", rhyme=False)
    free = pipe(prompt=title_prompt("春夜"), n=30, seed=0, constraint=free_form, max_tokens=40)
    assert all(is_form(t, "wujue") for t in free.texts)
    assert "rhyme" not in free.recipe["constraint"]
    assert sum(rhymes_level(t, "wujue") for t in free.texts) < 30
    qilv = pipe(prompt="", n=6, seed=1, constraint=poem_constraint("qilv"), max_tokens=70)
    assert all(is_form(t, "qilv") and rhymes_level(t, "qilv") for t in qilv.texts), qilv.texts


class _Vocab:
    """A tokenizer stand-in: whole characters, one two-character token, a byte piece and end-of-text."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces, self.eot_id = pieces, len(pieces)

    def token_bytes(self) -> list[bytes | None]:
        return [*self.pieces, None]


def test_rhyme_mask_offsets_multi_character_tokens_and_byte_pieces() -> None:
    import torch

    assert FORMS["wujue"].rhyme_offsets == (10, 23) and FORMS["qilv"].rhyme_offsets == (14, 31, 48, 65)
    poem = TANG["静夜思"]
    assert [poem[k] for k in FORMS["wujue"].rhyme_offsets] == ["霜", "乡"]
    chars = "床前明月光疑是地上霜举头望思故乡低江山流楼"
    pieces = [c.encode() for c in chars] + ["，".encode(), "。".encode(), b"\n"]
    pieces += ["江月".encode(), "山光".encode(), "乡".encode()[:1]]
    tc = poem_constraint("wujue").bind(_Vocab(pieces))
    ids = {p.decode("utf-8", "ignore") or "byte": i for i, p in enumerate(pieces)}
    prefix = [ids[c] for c in "床前明月光，疑是地上"]  # the next character closes line 2: the first rhyme
    allowed = torch.isfinite(tc(torch.zeros(1, len(pieces) + 1), torch.tensor([prefix])))[0]
    ok = {p for p, i in ids.items() if allowed[i]}
    assert {"霜", "光", "乡", "江", "明", "楼", "流", "头"} <= ok  # level tones with a rhyme class
    assert not ok & {"月", "望", "地", "上", "故", "byte", "江月", "山光"}, ok  # oblique; a byte piece; two chars
    # the second rhyme must share 霜's class (江阳): 乡, 光, 江 yes; 楼 (油求), 明 (中东) no
    second = [ids[c] for c in "床前明月光，疑是地上霜。\n举头望明月，低头思故"]
    allowed = torch.isfinite(tc(torch.zeros(1, len(pieces) + 1), torch.tensor([second])))[0]
    ok = {p for p, i in ids.items() if allowed[i]}
    assert {"乡", "光", "江"} <= ok and not ok & {"楼", "明", "流", "byte"}, ok
    one_before = [ids[c] for c in "床前明月光，疑是地"]  # a two-character token would cover the rhyme offset
    allowed = torch.isfinite(tc(torch.zeros(1, len(pieces) + 1), torch.tensor([one_before])))[0]
    assert allowed[ids["山光"]] and not allowed[ids["江月"]]  # its second character is the rhyme: 光 level, 月 not
    assert rhymes_level(poem, "wujue") and not rhymes_level(TANG["春晓"], "wujue")  # 鸟/少: oblique rhymes


def test_cli_generate_form_and_eval_form(poem_run, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(
        capsys, "generate", poem_run.id, "--form", "wujue", "--acrostic", "春江花月", "--prompt", "四季", "-n", "3"
    )
    assert code == 0, err
    poems = re.findall(r"四季\n(.+\n.+)", out)
    assert len(poems) == 3 and all(is_form(p, "wujue", "春江花月") for p in poems), out
    records = [json.loads(x) for x in (poem_run.dir / "generated" / "texts.jsonl").read_text().splitlines()]
    assert records[0]["recipe"]["constraint"]["acrostic"] == "春江花月"
    code, out, err = cli(
        capsys, "generate", poem_run.id, "--form", "qijue", "--prompt", "春夜", "--seed", "7"
    )  # streamed
    assert code == 0, err
    assert out.startswith("春夜\n") and is_form(out[len("春夜\n") :].rstrip("\n"), "qijue"), out
    code, out, err = cli(capsys, "generate", poem_run.id, "--acrostic", "春江花月")
    assert code != 0 and "--acrostic needs --form" in err
    code, out, err = cli(capsys, "generate", poem_run.id, "--no-rhyme")
    assert code != 0 and "--no-rhyme needs --form" in err
    code, out, err = cli(capsys, "generate", poem_run.id, "--form", "wujue", "--no-rhyme", "-n", "2")
    assert code == 0, err
    last = json.loads((poem_run.dir / "generated" / "texts.jsonl").read_text().splitlines()[-1])
    assert "rhyme" not in last["recipe"]["constraint"]
    code, out, err = cli(capsys, "generate", poem_run.id, "--form", "sonnet")
    assert code != 0 and "unknown poem form 'sonnet'" in err
    code, out, err = cli(capsys, "eval", poem_run.id, "--form", "wujue", "-n", "4")
    assert code == 0, err
    result = json.loads((poem_run.dir / "eval" / "poetry_wujue.json").read_text())
    assert result["form_rate"] == 1.0 and result["form_rate_floor"] == 1.0 and result["n"] == 4
    assert "rhyme_rate" in out and "tone_agreement" in out
    code, out, err = cli(capsys, "eval", poem_run.id, "--form", "wulv", "-n", "2")  # both wulv poems train
    assert code != 0 and "hold no 五言律诗" in err
