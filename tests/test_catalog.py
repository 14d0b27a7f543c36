"""The metric catalogue is the one home of metric facts: every number the evaluators write is described
there (or named as bookkeeping), and the CLI, the report and ``genloop compare`` take its direction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import conftest
import pytest
from conftest import cli, tiny

import genloop
from genloop.evaluation import catalog
from genloop.evaluation.compare import best_runs
from genloop.training.logger import read_metrics


def _uncatalogued(result: dict[str, Any], prefix: str = "") -> set[str]:
    """Numeric keys of an evaluation result that the catalogue neither describes nor names as bookkeeping."""
    known = set(catalog.CATALOG) | catalog.companions() | catalog.BOOKKEEPING
    return {
        k
        for k, v in result.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k.removeprefix(prefix) not in known
    }


@pytest.mark.parametrize("model, extra", [("cvae", []), ("ddpm", ["model.class_conditional=true"])])
def test_every_image_metric_is_catalogued(model: str, extra: list[str]) -> None:
    """A conditional VAE (class metrics, likelihood bounds) and a conditional diffusion model (sampler
    settings): every number in eval/metrics.json and in the quick evaluations is in the catalogue."""
    overrides = tiny(model, *extra, "train.eval_every=2", "train.eval_samples=12", "train.eval_time_share=1")
    run = genloop.train(model, data="digits", overrides=overrides, steps=2, progress=False)
    r = genloop.evaluate(run.id, n=40)
    assert {"fid", "kid", "precision", "class_accuracy", "copy_rate"} <= set(r)  # the run measured something
    assert _uncatalogued(r) == set()
    quick = [rec for rec in read_metrics(run.dir / "metrics.jsonl") if "eval/fid" in rec]
    assert quick, "the quick evaluator ran"
    assert _uncatalogued(quick[-1], prefix="eval/") - {"time"} == set()
    assert all(
        catalog.get(k.removeprefix("eval/")).selectable for k in quick[-1] if k.removeprefix("eval/") in catalog.CATALOG
    )


def test_every_text_metric_is_catalogued(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog. Pack my box with five dozen jugs.\n" * 30)
    overrides = [
        *conftest.TINY_GPT,
        "train.eval_every=2",
        "train.eval_tokens=64",
        "train.select_metric=val_loss",
    ]
    run = genloop.train("gpt", data=str(corpus), overrides=overrides, steps=2, progress=False)
    r = genloop.evaluate(run.id, n=4)
    assert {"val_loss", "distinct_2", "self_bleu", "copy_rate"} <= set(r)
    assert _uncatalogued(r) == set()
    quick = [rec for rec in read_metrics(run.dir / "metrics.jsonl") if "eval/val_loss" in rec]
    assert quick and _uncatalogued(quick[-1], prefix="eval/") - {"time"} == set()


def test_catalogue_entries_are_consistent() -> None:
    for key, m in catalog.CATALOG.items():
        assert m.key == key and m.label and m.help, key
        assert m.format(1.5) != "-" and m.format(None) == "-" and m.format(float("nan")) == "-"
        if m.direction == "closer":
            assert m.floor, f"{key}: 'closer to real' needs the real-data value to be closer to"
    assert set(catalog.selectable()) >= {"fid", "val_loss"}
    assert not (catalog.BOOKKEEPING & set(catalog.CATALOG))


def test_badness_ranks_by_direction() -> None:
    assert catalog.get("fid").badness(2.0) < catalog.get("fid").badness(3.0)
    assert catalog.get("precision").badness(0.9) < catalog.get("precision").badness(0.5)
    distinct = catalog.get("distinct_2")
    assert distinct.badness(0.62, floor=0.6) < distinct.badness(0.9, floor=0.6) < distinct.badness(0.2, floor=0.6)
    with pytest.raises(ValueError):
        distinct.badness(0.5)  # closer to what? no floor, no ranking
    with pytest.raises(ValueError):
        catalog.get("kl_nats").badness(1.0)
    with pytest.raises(KeyError, match="unknown metric 'fdi'"):
        catalog.get("fdi")


def test_best_runs_follow_the_catalogue() -> None:
    rows = [
        {"run_id": "a", "fid": 5.0, "precision": 0.9, "self_bleu": 0.50, "self_bleu_floor": 0.20, "kl_nats": 3.0},
        {"run_id": "b", "fid": 4.0, "precision": 0.7, "self_bleu": 0.25, "self_bleu_floor": 0.20, "kl_nats": 9.0},
        {"run_id": "c", "fid": float("nan"), "precision": 0.8},
    ]
    assert best_runs(rows) == {"fid": "b", "precision": "a", "self_bleu": "b"}  # KL has no better side


def _fake_eval(run: Any, values: dict[str, float]) -> None:
    (run.dir / "eval").mkdir(exist_ok=True)
    (run.dir / "eval" / "metrics.json").write_text(json.dumps({"step": 1, **values}))


def test_compare_and_eval_table_use_the_catalogue(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`genloop compare` writes the best run per metric by the catalogue's direction (the lower FID, the
    higher recall), and `genloop eval`'s table says "lower"/"higher" as the catalogue does."""
    runs = [genloop.train("dcgan", data="digits", overrides=tiny("dcgan"), steps=1, progress=False) for _ in range(2)]
    _fake_eval(runs[0], {"fid": 9.0, "fid_floor": 3.0, "recall": 0.8, "recall_floor": 0.9})
    _fake_eval(runs[1], {"fid": 6.0, "fid_floor": 3.0, "recall": 0.4, "recall_floor": 0.9})
    code, out, err = cli(capsys, "compare", runs[0].id, runs[1].id, "--out", tmp_path / "cmp")
    assert code == 0, err
    written = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert written["best"] == {"fid": runs[1].id, "recall": runs[0].id}
    header = out.splitlines()[0].split("\t")
    assert header[header.index("fid") + 1] == "fid_x_floor" and "recall" in header
    assert [r["fid_x_floor"] for r in written["runs"]] == [pytest.approx(3.0), pytest.approx(2.0)]

    from genloop.cli.main import print_metrics

    result = {
        "run_id": "r",
        "n_generated": 10,
        "n_reference": 10,
        "fid": 6.0,
        "fid_floor": 3.0,
        "kid": 0.01,
        "kid_std": 0.002,
        "kid_floor": 0.001,
        "precision": 0.5,
        "precision_floor": 0.9,
        "kl_nats": 2.0,
    }
    capsys.readouterr()
    print_metrics(result)
    out = capsys.readouterr().out
    rows = {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if len(cells := [c.strip() for c in line.strip().strip("│").split("│")]) == 4
    }
    for key in ("fid", "kid", "precision", "kl_nats"):
        m = catalog.get(key)
        value, floor, better = rows[m.label]
        assert value.startswith(m.format(result[key])) and better == m.better_word, (key, rows[m.label])
        assert floor == (m.format(result[m.floor]) if m.floor else "")
    assert rows["KID"][0] == "0.0100 ± 0.0020" and rows["KL (nats / image)"][2] == ""  # no side claimed
