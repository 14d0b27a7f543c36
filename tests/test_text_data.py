"""Text data: reading corpora (file, folder, JSONL, built-in), errors, tokenizers (char, BPE, local HF),
the split, the token cache, and the resumable batch stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genloop.errors import ConfigError, DataError, NotFoundError
from genloop.modalities.text import (
    EOT,
    TextDataConfig,
    TokenBatches,
    builtin_corpora,
    load_text_dataset,
    load_tokenizer,
    read_documents,
    split_documents,
    train_tokenizer,
)

CHINESE = "机器学习很有趣。\n"
EMOJI = "🎵🎶 ok 👍🏽"
MIXED = "  Leading spaces, tabs\tand\nnewlines — café, naïve, Ελληνικά, русский, العربية, 日本語 🎉\n\n"
TEXT = ("The quick brown fox jumps over the lazy dog.\n" * 5 + CHINESE + EMOJI + "\n" + MIXED) * 3


def cfg(path: Path | str, **kw) -> TextDataConfig:
    return TextDataConfig(name=str(path), **kw)


@pytest.fixture()
def txt(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "b" / "deep").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.txt").write_text("document a\n", encoding="utf-8")
    (root / "b" / "c.md").write_text("# document c\n", encoding="utf-8")
    (root / "b" / "deep" / "d.py").write_text("print('document d')\n", encoding="utf-8")
    (root / "README").write_text("document readme\n", encoding="utf-8")  # no suffix, text: taken
    (root / ".hidden.txt").write_text("hidden\n", encoding="utf-8")  # hidden: skipped
    (root / ".git" / "config.txt").write_text("hidden folder\n", encoding="utf-8")  # in a hidden folder: skipped
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" * 10)  # not a text suffix: skipped
    (root / "blob").write_bytes(b"\x00\x01\x02\x03" * 10)  # no suffix, binary content: skipped
    (root / "b" / "e.jsonl").write_text(
        json.dumps({"text": "record e1"}) + "\n" + json.dumps({"text": "record e2"}) + "\n"
    )
    return root


@pytest.fixture()
def jsonl(tmp_path: Path) -> Path:
    p = tmp_path / "docs.jsonl"
    rows = [{"id": i, "text": f"doc {i}: " + TEXT[i * 7 : i * 7 + 60], "body": f"body {i}"} for i in range(20)]
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    return p


# ---------------------------------------------------------------------------------------- reading


def test_text_file_is_one_document_with_normalised_line_endings(tmp_path: Path) -> None:
    p = tmp_path / "notes.md"
    p.write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")
    docs, desc = read_documents(cfg(p))
    assert docs == ["line one\nline two\n"]
    assert str(p.resolve()) in desc


def test_folder_documents_sorted_hidden_and_binary_skipped(folder: Path) -> None:
    docs, desc = read_documents(cfg(folder))
    # sorted by relative path: README < a.txt < b/c.md < b/deep/d.py < b/e.jsonl (one document per record)
    assert docs == [
        "document readme\n",
        "document a\n",
        "# document c\n",
        "print('document d')\n",
        "record e1",
        "record e2",
    ]
    assert "2 non-text files skipped" in desc


def test_folder_rejects_a_binary_file_with_a_text_suffix(folder: Path) -> None:
    (folder / "b" / "bad.txt").write_bytes(b"ok\x00\x01")
    with pytest.raises(DataError, match=r"bad\.txt.*binary"):
        read_documents(cfg(folder))


def test_folder_without_text_files(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match="no text files"):
        read_documents(cfg(tmp_path / "imgs"))


def test_jsonl_default_and_custom_field(jsonl: Path) -> None:
    docs, _ = read_documents(cfg(jsonl))
    assert len(docs) == 20 and docs[0].startswith("doc 0: ")
    docs, _ = read_documents(cfg(jsonl, jsonl_field="body"))
    assert docs[:2] == ["body 0", "body 1"]


def test_jsonl_errors_name_file_line_and_fields(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        read_documents(cfg(p))
    p.write_text('{"text": "fine"}\n\n{"body": "x", "id": 3}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: no field 'text' \(fields present: body, id\)") as e:
        read_documents(cfg(p))
    assert "\n" not in str(e.value)
    p.write_text('{"text": 5}\n')
    with pytest.raises(DataError, match="is a int, not a string"):
        read_documents(cfg(p))
    p.write_text("[1, 2]\n")
    with pytest.raises(DataError, match="expected an object"):
        read_documents(cfg(p))


def test_utf8_error_names_byte_offset_and_line(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_bytes(b"fine line\nsecond line\ncaf\xe9\n")
    with pytest.raises(DataError) as e:
        read_documents(cfg(p))
    msg = str(e.value)
    assert "notes.txt: not UTF-8 text: byte 0xe9 at offset 25 (line 3)" in msg and "\n" not in msg


def test_binary_empty_and_missing(tmp_path: Path) -> None:
    blob = tmp_path / "blob.txt"
    blob.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(DataError, match="looks like a binary file"):
        read_documents(cfg(blob))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_documents(cfg(empty))
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\t\n")
    with pytest.raises(DataError, match="empty"):
        read_documents(cfg(blank))
    with pytest.raises(NotFoundError, match="not a built-in \\(pydoc\\)"):
        read_documents(cfg(tmp_path / "nope.txt"))
    with pytest.raises(NotFoundError, match="pydoc"):
        read_documents(cfg("no-such-corpus"))
    with pytest.raises(ConfigError, match="image dataset"):
        read_documents(cfg("digits"))


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        TextDataConfig(val_fraction=1.0)
    with pytest.raises(ConfigError, match="vocab_size"):
        TextDataConfig(tokenizer="bpe", vocab_size=100)
    TextDataConfig(tokenizer="char", vocab_size=100)  # vocab_size only matters for bpe
    with pytest.raises(NotFoundError, match="not char, bpe or an existing path"):
        load_text_dataset(TextDataConfig(tokenizer="gpt2"))


def test_builtin_pydoc_corpus() -> None:
    assert "pydoc" in builtin_corpora()
    ds = load_text_dataset(TextDataConfig(name="pydoc"))
    info = ds.info()
    assert info["documents"]["train"] > 50 and info["documents"]["val"] >= 5 and info["split"] == "documents"
    assert info["tokenizer"] == "char" and ds.train.dtype == np.uint16
    assert len(ds.train) > 300_000 and ds.val_chars > 10_000 and ds.val_bytes >= ds.val_chars
    assert "assert" in ds.train_text or "assert" in ds.tokenizer.decode(ds.val[:5000].tolist())


# ------------------------------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_round_trip_exact_on_any_script(kind: str, tmp_path: Path) -> None:
    tok = train_tokenizer(kind, [TEXT], vocab_size=300)
    assert tok.kind == kind and tok.decode([tok.eot_id]) == EOT
    for s in (CHINESE, EMOJI, MIXED, TEXT, " leading", "trailing \n\n"):
        ids = tok.encode(s)
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == s
    tok.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.kind == kind and again.vocab_size == tok.vocab_size and again.eot_id == tok.eot_id
    assert again.encode(TEXT) == tok.encode(TEXT)


def test_char_unknown_characters_and_bpe_handles_anything() -> None:
    char = train_tokenizer("char", ["abc"], 0)
    assert char.vocab_size == 5  # a b c <|endoftext|> <unk>
    assert char.decode(char.encode("abz")) == "ab\ufffd"
    bpe = train_tokenizer("bpe", ["abc abc abc"], 260)
    assert bpe.decode(bpe.encode(CHINESE + EMOJI)) == CHINESE + EMOJI  # never seen, still exact (bytes)
    # a literal end-of-text string in a document is text, not a separator
    ids = bpe.encode(f"a{EOT}b")
    assert bpe.eot_id not in ids and bpe.decode(ids) == f"a{EOT}b"


def test_bpe_file_loads_in_tokenizers_and_transformers(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as HFTok
    from transformers import PreTrainedTokenizerFast

    bpe = train_tokenizer("bpe", [TEXT], 300)
    bpe.save(tmp_path / "tok")
    raw = HFTok.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    assert raw.encode(TEXT).ids == bpe.encode(TEXT)
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tok" / "tokenizer.json"))
    assert fast.decode(fast.encode(MIXED), clean_up_tokenization_spaces=False) == MIXED
    assert load_tokenizer(tmp_path / "tok" / "tokenizer.json").kind == "bpe"  # the file of a GenLoop folder


def _hf_dir(tmp_path: Path) -> Path:
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = HFTok(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        [TEXT],
        trainers.BpeTrainer(
            vocab_size=320,
            special_tokens=["<pad>", EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOT)
    out = tmp_path / "hf_tok"
    fast.save_pretrained(str(out))
    return out


def test_hf_tokenizer_folder(tmp_path: Path, txt: Path) -> None:
    path = _hf_dir(tmp_path)
    tok = load_tokenizer(path)
    assert tok.kind == "hf" and tok.eot_id == 1 and tok.vocab_size == 320
    for s in (CHINESE, EMOJI, MIXED):
        assert tok.decode(tok.encode(s)) == s
    tok.save(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert again.kind == "hf" and again.eot_id == tok.eot_id and again.encode(TEXT) == tok.encode(TEXT)
    ds = load_text_dataset(cfg(txt), tokenizer=str(path))  # a model that brings its own tokenizer
    assert ds.tokenizer.kind == "hf" and ds.info()["vocab_size"] == 320
    assert ds.val[-1] == 1 and ds.tokenizer.decode(ds.train[:-1].tolist()) in TEXT
    assert load_text_dataset(cfg(txt), tokenizer=str(path)).info()["cached"]
    with pytest.raises(DataError, match="no tokenizer here"):
        load_tokenizer(tmp_path)
    with pytest.raises(NotFoundError):
        load_tokenizer(tmp_path / "no_such_tokenizer")


# ------------------------------------------------------------------------------------ split + data


def _documents_of(tokens: np.ndarray, tok) -> list[str]:
    docs, cur = [], []
    for t in tokens.tolist():
        if t == tok.eot_id:
            docs.append(tok.decode(cur))
            cur = []
        else:
            cur.append(t)
    assert cur == []  # every document ends with end-of-text
    return docs


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_jsonl_dataset_split_by_document(jsonl: Path, kind: str) -> None:
    ds = load_text_dataset(cfg(jsonl, tokenizer=kind, vocab_size=300, val_fraction=0.25))
    docs, _ = read_documents(cfg(jsonl))
    train, val = _documents_of(ds.train, ds.tokenizer), _documents_of(ds.val, ds.tokenizer)
    assert len(val) == 5 and len(train) == 15 and sorted(train + val) == sorted(docs)
    assert not set(train) & set(val)  # by document: none in both
    assert train == [d for d in docs if d in set(train)]  # corpus order kept
    info = ds.info()
    assert info["documents"] == {"train": 15, "val": 5} and info["tokens"] == {
        "train": len(ds.train),
        "val": len(ds.val),
    }
    assert ds.val_chars == sum(map(len, val)) and ds.val_bytes == sum(len(v.encode()) for v in val)
    assert ds.train_text == "\n".join(train)
    # deterministic from the seed; another seed, another split
    again = load_text_dataset(cfg(jsonl, tokenizer=kind, vocab_size=300, val_fraction=0.25))
    assert np.array_equal(again.train, ds.train)
    other = load_text_dataset(cfg(jsonl, tokenizer=kind, vocab_size=300, val_fraction=0.25, seed=1))
    assert set(_documents_of(other.val, other.tokenizer)) != set(val)


def test_split_documents_edge_cases() -> None:
    train, val, how = split_documents(["a", "b"], 0.01, 0)
    assert how == "documents" and len(train) == len(val) == 1
    train, val, how = split_documents(["x" * 10 for _ in range(3)], 0.9, 0)
    assert len(train) == 1 and len(val) == 2
    with pytest.raises(DataError, match="at least 2"):
        split_documents(["a"], 0.1, 0)


def test_single_file_split_by_position_at_a_line(txt: Path) -> None:
    ds = load_text_dataset(cfg(txt))
    assert ds.info()["split"] == "position" and ds.info()["documents"] == {"train": 1, "val": 1}
    train, val = _documents_of(ds.train, ds.tokenizer), _documents_of(ds.val, ds.tokenizer)
    assert train[0] + val[0] == TEXT and train[0].endswith("\n")
    assert abs(len(train[0]) - 0.9 * len(TEXT)) <= len(TEXT) // 100 + 1
    assert ds.train[-1] == ds.val[-1] == ds.tokenizer.eot_id
    # no newline near the cut: nanoGPT's exact character position
    train, val, _ = split_documents(["abcdefghij" * 30], 0.1, 0)
    assert len(train[0]) == 270 and len(val[0]) == 30


def test_tokenizer_trained_on_train_documents_only(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps({"text": t}) for t in ["aaa", "bbb", "ccc", "ddd"]))
    ds = load_text_dataset(cfg(p, val_fraction=0.25))
    val_doc = _documents_of(ds.val, ds.tokenizer)[0]
    assert set(val_doc) == {"\ufffd"}  # its characters were never seen in training: <unk>
    assert ds.tokenizer.vocab_size == 3 + 2


def test_cache_is_reused_and_keyed_by_content(txt: Path) -> None:
    first = load_text_dataset(cfg(txt, tokenizer="bpe", vocab_size=300))
    second = load_text_dataset(cfg(txt, tokenizer="bpe", vocab_size=300))
    assert not first.info()["cached"] and second.info()["cached"]
    assert first.info()["cache_key"] == second.info()["cache_key"]
    assert isinstance(second.train, np.memmap) and np.array_equal(first.train, second.train)
    assert second.tokenizer.encode(TEXT) == first.tokenizer.encode(TEXT)
    folder = Path(second.info()["cache_dir"])
    assert {"train.bin", "val.bin", "meta.json", "train.txt", "tokenizer"} <= {p.name for p in folder.iterdir()}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    # the same content elsewhere shares the cache, under today's name
    moved = txt.with_name("moved.txt")
    moved.write_bytes(txt.read_bytes())
    elsewhere = load_text_dataset(cfg(moved, tokenizer="bpe", vocab_size=300))
    assert elsewhere.info()["cached"] and elsewhere.name == str(moved) and "moved.txt" in elsewhere.info()["source"]
    # a changed setting or a changed file: a new key
    assert load_text_dataset(cfg(txt, tokenizer="bpe", vocab_size=280)).info()["cache_key"] != first.info()["cache_key"]
    txt.write_text(TEXT + "one more line\n", encoding="utf-8")
    changed = load_text_dataset(cfg(txt, tokenizer="bpe", vocab_size=300))
    assert changed.info()["cache_key"] != first.info()["cache_key"] and not changed.info()["cached"]


def test_damaged_cache_is_rebuilt(txt: Path) -> None:
    ds = load_text_dataset(cfg(txt))
    folder = Path(ds.info()["cache_dir"])
    expected = np.array(ds.train)
    del ds
    (folder / "train.bin").write_bytes(b"\x00\x01\x02")  # truncated
    again = load_text_dataset(cfg(txt))
    assert not again.info()["cached"] and np.array_equal(again.train, expected)


def test_unwritable_cache_prepares_in_memory(txt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import genloop.modalities.text.cache as text

    def no_cache(*parts: str) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(text, "cache_dir", no_cache)
    with pytest.warns(UserWarning, match="in memory"):
        ds = load_text_dataset(cfg(txt))
    assert (
        not ds.info()["cached"]
        and ds.train[-1] == ds.tokenizer.eot_id
        and ds.train_text + ds.tokenizer.decode(ds.val[:-1].tolist()) == TEXT
    )


# ------------------------------------------------------------------------------------------ batches


def test_token_batches_shapes_shift_determinism_and_resume() -> None:
    data = np.arange(1000, dtype=np.uint16)
    b = TokenBatches(data, batch_size=4, block_size=8, seed=3)
    x, y = next(b)
    assert x.shape == y.shape == (4, 8) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)  # targets are the next tokens
    assert int(x.max()) < 1000 - 1
    same = TokenBatches(data, 4, 8, seed=3)
    assert torch.equal(next(same)[0], x)
    assert not torch.equal(next(TokenBatches(data, 4, 8, seed=4))[0], x)
    for _ in range(5):
        next(b)
    state = b.state_dict()
    assert state == {"step": 6}
    expected = [next(b) for _ in range(3)]
    resumed = TokenBatches(data, 4, 8, seed=3)
    resumed.load_state_dict(state)
    for (ex, ey), (rx, ry) in zip(expected, (next(resumed) for _ in range(3))):
        assert torch.equal(ex, rx) and torch.equal(ey, ry)
    b.device = "cpu"
    assert b.device == torch.device("cpu")


def test_token_batches_cover_the_last_window_and_reject_short_data() -> None:
    data = np.arange(10, dtype=np.uint16)
    b = TokenBatches(data, batch_size=64, block_size=9)
    x, y = next(b)
    assert torch.equal(x[0], torch.arange(9)) and torch.equal(y[0], torch.arange(1, 10))
    with pytest.raises(DataError, match="has 9 tokens; it needs more than block_size=9"):
        TokenBatches(np.arange(9), batch_size=2, block_size=9)


def test_batches_from_a_dataset(txt: Path) -> None:
    ds = load_text_dataset(cfg(txt))
    x, y = next(iter(TokenBatches(ds.train, 2, 16)))
    assert ds.tokenizer.decode(x[0].tolist())[1:] == ds.tokenizer.decode(y[0].tolist())[:-1]
