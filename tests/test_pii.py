"""PII scrubbing on text ingest (issue 15): each kind replaced in English and Chinese text, near-misses kept,
counts, and ``data.scrub_pii`` end to end (data info, cache key, run.json, the tokens the model sees)."""

from __future__ import annotations

import json
from pathlib import Path

import conftest
import pytest

import genloop
from genloop.errors import ConfigError
from genloop.modalities.text import TextDataConfig, load_text_dataset, read_documents
from genloop.safety.pii import id_check_digit, luhn_ok, scrub, scrub_documents, valid_id_cn

ID17 = "11010519491231002"
ID = ID17 + id_check_digit(ID17)  # 11010519491231002X, GB 11643's own example
CARD = "4111 1111 1111 1111"  # a Luhn-valid test card


def with_luhn(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


CARD19 = with_luhn("622202020011223344")  # a 19-digit UnionPay-style number


def wrong_check(id17: str) -> str:
    """An 18-digit number with a wrong check digit that also fails Luhn (so no rule takes it)."""
    for d in "0123456789":
        n = id17 + d
        if not valid_id_cn(n) and not luhn_ok(n):
            return n
    raise AssertionError


def test_checksums() -> None:
    assert ID == "11010519491231002X" and valid_id_cn(ID) and valid_id_cn(ID.lower())
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


@pytest.mark.parametrize(
    "text, expected, counts",
    [
        ("Write to li.lei+ml@mail.example.co.uk today.", "Write to <EMAIL> today.", {"email": 1}),
        ("请发邮件到zhangsan@qq.com，谢谢。", "请发邮件到<EMAIL>，谢谢。", {"email": 1}),
        ("Call +44 20 7946 0958 or (415) 555-2671.", "Call <PHONE> or <PHONE>.", {"phone": 2}),
        ("US: 415.555.2671, +1 415 555 2671", "US: <PHONE>, <PHONE>", {"phone": 2}),
        ("手机13800138000或+86 138-0013-8000，座机010-12345678", "手机<PHONE>或<PHONE>，座机<PHONE>", {"phone": 3}),
        (f"身份证号{ID}，旧证110105491231002。", "身份证号<ID_CN>，旧证<ID_CN>。", {"id_cn": 2}),
        (f"ID {ID.lower()} on file", "ID <ID_CN> on file", {"id_cn": 1}),
        (f"card {CARD} or 4111-1111-1111-1111", "card <BANK_CARD> or <BANK_CARD>", {"bank_card": 2}),
        (f"银行卡号{CARD19}已绑定", "银行卡号<BANK_CARD>已绑定", {"bank_card": 1}),
        ("server 192.168.1.10. and 10.0.0.1", "server <IP>. and <IP>", {"ip": 2}),
        ("服务器地址2001:db8::8a2e:370:7334和fe80::1", "服务器地址<IP>和<IP>", {"ip": 2}),
    ],
)
def test_each_kind_is_replaced(text: str, expected: str, counts: dict[str, int]) -> None:
    out, found = scrub(text)
    assert out == expected and found == counts


@pytest.mark.parametrize(
    "text",
    [
        f"wrong check digit {wrong_check(ID17)} here",
        "order 4111111111111112 failed",  # 16 digits, fails Luhn
        "release 1.2.3.4.5 and 10.1.2.3.4",
        "dates 2023-10-05, 2023/10/05, 2023年10月5日, 20231005",
        "time 12:30:45, slice a[1::2], std::vector, Foo::bar",
        "pi is 3.14159265358979323 and the price 1,234,567.89",
        "build 20231005123456 (14 digits, no Luhn)" if not luhn_ok("20231005123456") else "plain words",
    ],
)
def test_near_misses_are_kept(text: str) -> None:
    out, found = scrub(text)
    assert out == text and found == {}


def test_counts_over_documents_and_kinds() -> None:
    docs = ["a@b.com and c@d.org", f"card {CARD}", "nothing here"]
    out, counts = scrub_documents(docs)
    assert out == ["<EMAIL> and <EMAIL>", "card <BANK_CARD>", "nothing here"]
    assert counts == {"email": 2, "ip": 0, "id_cn": 0, "bank_card": 1, "phone": 0}
    assert scrub("a@b.com 10.0.0.1", kinds=["ip"]).text == "a@b.com <IP>"
    with pytest.raises(ConfigError, match="unknown PII kinds"):
        scrub("x", kinds=["ssn"])


def test_scrub_pii_on_text_ingest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus.txt"
    line = f"Contact li.lei@example.cn or 13800138000. 身份证{ID}。Card {CARD}. Host 10.0.0.1.\n"
    corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 20 + line * 5, encoding="utf-8")
    plain = load_text_dataset(TextDataConfig(name=str(corpus)))
    scrubbed = load_text_dataset(TextDataConfig(name=str(corpus), scrub_pii=True))
    assert "pii_scrubbed" not in plain.info() and "li.lei" in plain.train_text
    assert scrubbed.info()["cache_key"] != plain.info()["cache_key"]  # the cache is keyed on the option
    assert scrubbed.info()["pii_scrubbed"] == {"email": 5, "ip": 5, "id_cn": 5, "bank_card": 5, "phone": 5}
    text = scrubbed.train_text + scrubbed.tokenizer.decode([int(t) for t in scrubbed.val])
    assert "li.lei" not in text and "13800138000" not in text and ID not in text and "<EMAIL>" in text
    again = load_text_dataset(TextDataConfig(name=str(corpus), scrub_pii=True))  # from the cache, same counts
    assert again.info()["cached"] and again.info()["pii_scrubbed"] == scrubbed.info()["pii_scrubbed"]
    docs, _ = read_documents(TextDataConfig(name=str(corpus), scrub_pii=True))
    assert "<PHONE>" in docs[0]
    code, out, _ = conftest.cli(capsys, "data", "info", str(corpus), "--text", "--set", "scrub_pii=true")
    assert code == 0 and "pii_scrubbed" in out
    overrides = [*conftest.TINY_GPT, "data.scrub_pii=true"]
    run = genloop.train("gpt", data=str(corpus), overrides=overrides, steps=2, progress=False)
    info = json.loads((Path(run.dir) / "run.json").read_text(encoding="utf-8"))
    assert info["pii_scrubbed"]["email"] == 5
    with pytest.raises(ConfigError, match="scrub_pii"):
        TextDataConfig(name=str(corpus), scrub_pii="yes")  # type: ignore[arg-type]
