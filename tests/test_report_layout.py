"""The run report's layout (issue 16): plots at a readable size, no panel for a curve with nothing to show (a
constant learning rate, a column logged once), a Timings box that does not repeat the Summary, process ids and
seeds as written (never "12,345"), and only the settings that apply to the run's modality (asked of the
modality objects)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from PIL import Image
from test_io_report import _fake_run

from genloop.evaluation import report
from genloop.evaluation.report import write_report
from genloop.modalities import modalities


def _records(n: int = 40, lr: float | None = 2e-4, **constant: float) -> list[dict]:
    out = []
    for i in range(n):
        r = {"step": i + 1, "time": i * 0.1, "a_loss": 3.0 - i * 0.05, "b_loss": 1 + (i % 5) * 0.1, "c": i**0.5}
        if lr is not None:
            r["lr"] = lr
        out.append({**r, **constant})
    return out


def _png_size(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as im:
        return im.size


def test_plots_are_two_to_a_row_at_a_readable_size() -> None:
    assert report._plot_grid(1) == (1, 1) and report._plot_grid(3) == (2, 2) and report._plot_grid(4) == (2, 2)
    png = report._render_losses(_records(lr=None))  # three moving curves
    assert png is not None
    width, height = _png_size(png)
    per_panel = width * 100 / report._PLOT_DPI / 2  # the <img> is shown at 100 dpi
    assert per_panel >= 500, per_panel  # three to a row made each ~340 px wide
    assert height >= 2 * report._PANEL_HEIGHT_IN * report._PLOT_DPI * 0.98  # a second row, not squeezed into one


def test_curves_with_nothing_to_show_get_no_panel() -> None:
    records = _records(lr=1e-3, kl_weight=1.0)
    for r in records[1:]:
        r.pop("c")  # "c" logged once: no curve
    panels, flat = report._panels(records)
    assert [p[0] for p in panels] == ["a_loss", "b_loss"]
    assert flat == [("kl_weight", 1.0), ("learning rate", 1e-3)]
    one_row = _png_size(report._render_losses(records))[1]  # type: ignore[arg-type]
    assert one_row < 1.2 * report._PANEL_HEIGHT_IN * report._PLOT_DPI  # two panels: one row
    changing = [{**r, "lr": 1e-3 * (1 - r["step"] / 80)} for r in records]  # a schedule: drawn
    assert [p[0] for p in report._panels(changing)[0]] == ["a_loss", "b_loss", "lr"]
    assert report._render_losses([{"step": 1, "lr": 1e-3}, {"step": 2, "lr": 1e-3}]) is None


def test_the_report_says_what_stayed_constant(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)  # its lr is 2e-4 at every step
    text = write_report(run).read_text(encoding="utf-8")
    assert "Constant throughout (not drawn): learning rate 0.0002." in text and 'alt="loss curves"' in text
    flat_only = tmp_path / "flat" / "runs" / "r"
    flat_only.mkdir(parents=True)
    (flat_only / "run.json").write_text(json.dumps({"id": "r", "status": "finished"}))
    (flat_only / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "lr": 0.1}) + "\n" for i in range(1, 4)))
    text = write_report(flat_only).read_text(encoding="utf-8")
    assert "Constant throughout: learning rate 0.1." in text and 'alt="loss curves"' not in text


def test_timings_do_not_repeat_the_summary(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    info = json.loads((run / "run.json").read_text())
    info["timings"] = {"train_seconds": 181.5, "images_per_s": 1234.5, "data_seconds": 2.25}
    (run / "run.json").write_text(json.dumps(info))
    text = write_report(run).read_text(encoding="utf-8")
    assert text.count("3 min 02 s") == 1 and text.count("1,234") == 1
    timings = text[text.index(">Timings<") :].split("</table>", 1)[0]
    assert "<th>Data</th><td>2.2 s</td>" in timings and "Train" not in timings and "per s" not in timings
    info["timings"] = {"train_seconds": 181.5, "images_per_s": 1234.5}  # all said above: no Timings box
    (run / "run.json").write_text(json.dumps(info))
    assert ">Timings<" not in write_report(run).read_text(encoding="utf-8")


def test_process_ids_and_seeds_are_plain_numbers(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    info = json.loads((run / "run.json").read_text())
    info.update({"pid": 30512, "seed": 123456, "step": 12000, "parent_pid": 4321})
    (run / "run.json").write_text(json.dumps(info))
    text = write_report(run).read_text(encoding="utf-8")
    assert "<td>30512</td>" in text and "30,512" not in text
    assert "<td>123456</td>" in text and "123,456" not in text and "<td>4321</td>" in text
    assert "<td>12,000</td>" in text  # a count keeps its separators


def _config_rows(text: str) -> dict[str, str]:
    config = text[text.index("Resolved config") :]
    return dict(re.findall(r"<tr><th>([^<]*)</th><td>([^<]*)</td></tr>", config))


def _with_config(run: Path, model: str, dp: dict) -> None:
    (run / "config.json").write_text(
        json.dumps(
            {
                "model": {"name": model},
                "data": {"name": "digits"},
                "train": {"steps": 10, "eval_samples": 500, "eval_tokens": 65536, "dp": dp},
                "data_spec": {"channels": 1, "image_size": 8, "num_classes": 10, "vocab_size": 0},
            }
        )
    )


DP_OFF = {"epsilon": None, "delta": None, "max_grad_norm": 1.0, "noise_multiplier": None, "accountant": "rdp"}


def test_only_the_settings_of_the_runs_modality_are_shown(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    _with_config(run, "dcgan", DP_OFF)
    rows = _config_rows(write_report(run).read_text(encoding="utf-8"))
    assert {"eval_samples", "image_size", "channels", "num_classes"} <= set(rows)
    assert "eval_tokens" not in rows and "vocab_size" not in rows
    assert rows["dp"] == "off" and "noise_multiplier" not in rows and "max_grad_norm" not in rows

    _with_config(run, "gpt", {**DP_OFF, "epsilon": 8.0, "delta": 1e-5})
    rows = _config_rows(write_report(run).read_text(encoding="utf-8"))
    assert {"eval_tokens", "vocab_size"} <= set(rows)
    assert not {"eval_samples", "image_size", "channels", "num_classes"} & set(rows)
    assert rows["dp.epsilon"] == "8.0" and rows["dp.max_grad_norm"] == "1.0" and "dp" not in rows  # DP on: shown

    _with_config(run, "no-such-family", DP_OFF)  # an unknown family: nothing is hidden but the unused DP knobs
    rows = _config_rows(write_report(run).read_text(encoding="utf-8"))
    assert {"eval_samples", "eval_tokens", "vocab_size", "image_size"} <= set(rows)


def test_every_modality_declares_settings_the_config_has() -> None:
    """Each own setting names a real key of a run's config (a typo would hide nothing, silently)."""
    from dataclasses import fields

    from genloop.systems.base import DataSpec
    from genloop.training.config import TrainConfig

    known = {f"train.{f.name}" for f in fields(TrainConfig)} | {f"data_spec.{f.name}" for f in fields(DataSpec)}
    for name in modalities:
        own = set(modalities[name].own_settings)
        assert own and own <= known, (name, own - known)
