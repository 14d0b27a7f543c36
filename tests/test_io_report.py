"""Image output (grids, PNGs with embedded recipes) and the self-contained HTML run report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from genloop.data.image_io import make_grid, read_recipe, save_images, save_png, tensor_to_pil
from genloop.evaluation.report import plot_losses, write_report
from genloop.training.logger import MetricsLogger, read_metrics, read_metrics_from


def _images(n: int, c: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 2 - 1


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------- io


@pytest.mark.parametrize("n", [1, 5, 16])
@pytest.mark.parametrize("c", [1, 3, 4])
def test_grid_shape(n: int, c: int) -> None:
    h = w = 8
    pad = 2
    grid = make_grid(_images(n, c), padding=pad)
    ncol = math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    assert grid.shape == (c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    assert grid.min() >= -1 and grid.max() <= 1


def test_grid_places_images_and_pads() -> None:
    imgs = _images(5, 3)
    grid = make_grid(imgs, nrow=2, padding=1, pad_value=-1.0)
    assert grid.shape == (3, 3 * 9 + 1, 2 * 9 + 1)
    assert torch.equal(grid[:, 1:9, 1:9], imgs[0])
    assert torch.equal(grid[:, 10:18, 10:18], imgs[3])  # row 1, column 1
    assert torch.all(grid[:, 0, :] == -1) and torch.all(grid[:, 19:, 10:] == -1)  # frame and empty cell


@pytest.mark.parametrize("c,mode", [(1, "L"), (3, "RGB"), (4, "RGBA")])
def test_tensor_to_pil_modes(c: int, mode: str) -> None:
    img = tensor_to_pil(_images(1, c, size=6)[0])
    assert img.mode == mode and img.size == (6, 6)
    extremes = tensor_to_pil(torch.tensor([[[-1.0, 1.0]]]))
    assert (extremes.getpixel((0, 0)), extremes.getpixel((1, 0))) == (0, 255)


def test_bad_shapes_rejected() -> None:
    with pytest.raises(ValueError):
        make_grid(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError):
        tensor_to_pil(torch.zeros(2, 4, 4))


def test_png_recipe_round_trip(tmp_path: Path) -> None:
    recipe = {"model": "dcgan", "dataset": "数字", "seed": 7, "sampler": {"steps": 50, "eta": 0.0}, "ok": True}
    path = save_png(tmp_path / "a.png", _images(1, 3)[0], recipe=recipe, upscale=3)
    assert read_recipe(path) == recipe
    with Image.open(path) as im:
        assert im.size == (24, 24)
        text = im.text
    # Plain per-key chunks for tools that do not parse JSON.
    assert text["model"] == "dcgan" and text["seed"] == "7" and text["dataset"] == "数字"
    assert json.loads(text["sampler"]) == {"steps": 50, "eta": 0.0}
    assert _no_temp_files(tmp_path)


def test_upscale_is_nearest_neighbour(tmp_path: Path) -> None:
    img = torch.tensor([[[-1.0, 1.0], [1.0, -1.0]]])
    path = save_png(tmp_path / "u.png", img, upscale=4)
    with Image.open(path) as im:
        px = im.load()
        assert im.size == (8, 8) and px[0, 0] == 0 and px[3, 3] == 0 and px[4, 0] == 255


def test_recipe_absent_is_none(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    assert read_recipe(plain) is None
    assert read_recipe(save_png(tmp_path / "norecipe.png", Image.new("L", (3, 3)))) is None


def test_save_images(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    recipe = {"model": "vae", "seed": 1}
    paths = save_images(_images(5, 1), out, recipe)
    assert len(paths) == 6 and paths[0].name == "grid.png"
    assert sorted(p.name for p in out.iterdir()) == ["grid.png"] + [f"sample_{i:04d}.png" for i in range(5)]
    assert read_recipe(paths[0]) == recipe
    for i, p in enumerate(paths[1:]):
        assert read_recipe(p) == {**recipe, "index": i}
        with Image.open(p) as im:
            assert im.size == (8, 8) and im.mode == "L"  # singles at native size
    with Image.open(paths[0]) as im:
        assert im.size == (4 * (3 * 10 + 2), 4 * (2 * 10 + 2))  # 3 x 2 grid, upscaled 4x
    assert _no_temp_files(out)


# ----------------------------------------------------------------------------------- metrics.jsonl


def test_metrics_reader_tolerates_a_line_being_written(tmp_path: Path) -> None:
    """The one reader of metrics.jsonl (report, studio worker, studio route): whole lines only, continuing
    from an offset, so a record cut mid-write is read once it is complete, never half or twice."""
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(10, {"loss": 1.5})
    logger.log(20, {"loss": 1.25})
    path = tmp_path / "metrics.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"step": 30, "lo')  # the logger is mid-write
    records, offset = read_metrics_from(path)
    assert records == [{"step": 10, "loss": 1.5}, {"step": 20, "loss": 1.25}]
    assert read_metrics_from(path, offset) == ([], offset)  # the half line is not consumed
    with open(path, "a", encoding="utf-8") as f:
        f.write('ss": 1.0}\n[1, 2]\nnot json\n{"step": 40, "loss": 0.5}\n')
    more, end = read_metrics_from(path, offset)
    assert more == [{"step": 30, "loss": 1.0}, {"step": 40, "loss": 0.5}]  # non-objects and bad lines skipped
    assert end == path.stat().st_size
    assert read_metrics(path) == records + more
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_metrics_logger_resume_drops_later_and_cut_lines(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=False)
    for step in (10, 20, 30):
        logger.log(step, {"loss": step / 10})
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 40, "lo')  # killed mid-write
    MetricsLogger(tmp_path, tensorboard=False, resume_step=20)
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 2.0}]
    assert (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").endswith("}\n")


# ------------------------------------------------------------------------------------------ report


def _fake_run(root: Path, full: bool = True) -> Path:
    run = root / "runs" / "20240501-dcgan-abc123"
    run.mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps(
            {
                "model": {"name": "dcgan", "latent_dim": 64},
                "data": {"name": "digits", "image_size": 16},
                "train": {"steps": 500, "lr": 2e-4, "betas": [0.5, 0.999]},
            }
        )
    )
    (run / "run.json").write_text(
        json.dumps(
            {
                "id": "20240501-dcgan-abc123",
                "model": "dcgan",
                "dataset": "digits",
                "status": "finished",
                "created": "2024-05-01T10:00:00",
                "finished": "2024-05-01T10:03:00",
                "step": 500,
                "seed": 42,
                "genloop_version": "0.1.0",
                "timings": {"train_seconds": 181.5, "data_seconds": 2.25},
            }
        )
    )
    if not full:
        return run
    with open(run / "metrics.jsonl", "w") as f:
        for i in range(50):
            step = (i + 1) * 10
            f.write(
                json.dumps(
                    {
                        "step": step,
                        "time": step * 0.36,
                        "lr": 2e-4,
                        "d_loss": 1.4 - i * 0.01,
                        "g_loss": 0.7 + 0.3 * math.sin(i),
                        "images_per_s": 900.0,
                    }
                )
                + "\n"
            )
        f.write('{"step": 510, "d_lo')  # a half-written last line, as a killed run leaves
    (run / "samples").mkdir()
    for step in (100, 500):
        save_png(run / "samples" / f"step-{step:06d}.png", make_grid(_images(4, 1, seed=step)))
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text(
        json.dumps(
            {
                "fid": 12.3,
                "fid_floor": 3.1,
                "kid": 0.012,
                "kid_std": 0.001,
                "kid_floor": 0.002,
                "is": 5.2,
                "is_std": 0.1,
                "is_real": 9.1,
                "n_generated": 1000,
                "n_reference": 1000,
                "n_floor": 500,
                "reference_split": "test",
                "bits_per_dim": 1.23,
                "feature_net": {
                    "id": "digits-cnn-v1",
                    "sha256": "ab" * 32,
                    "kind": "cnn",
                    "accuracy": 0.987,
                    "feature_dim": 128,
                },
            }
        )
    )
    return run


def _assert_self_contained(text: str) -> None:
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", text)  # every src/href is a data URI
    assert "<script" not in text


def test_report_full(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    path = write_report(run)
    assert path == run / "report.html"
    text = path.read_text(encoding="utf-8")
    assert "20240501-dcgan-abc123" in text and "dcgan" in text and "digits" in text and "finished" in text
    assert "FID" in text and "3.1" in text and "4.0× floor" in text and "IS" in text and "9.1" in text
    assert "digits-cnn-v1" in text and "98.7%" in text
    assert "latent_dim" in text and "3 min 02 s" in text  # config and timings
    assert text.count('<img class="px" src="data:image/png;base64,') == 2  # latest grid + earlier strip
    assert 'alt="loss curves"' in text
    _assert_self_contained(text)
    assert _no_temp_files(run)


def test_report_prefers_generated_grid_and_custom_out(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    save_images(_images(4, 1), run / "generated", {"model": "dcgan"})
    out = write_report(run, tmp_path / "elsewhere" / "r.html")
    text = out.read_text(encoding="utf-8")
    assert "generated/grid.png" in text
    assert text.count("data:image/png;base64,") == 4  # generated grid, 2 training grids, loss curves


def test_report_minimal_run(tmp_path: Path) -> None:
    run = _fake_run(tmp_path, full=False)
    text = write_report(run).read_text(encoding="utf-8")
    assert "20240501-dcgan-abc123" in text and "<html" in text and "</html>" in text
    assert "Evaluation" not in text and "data:image" not in text
    _assert_self_contained(text)


def test_report_broken_optional_file_becomes_warning(tmp_path: Path) -> None:
    run = _fake_run(tmp_path, full=False)
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text("{not json")
    text = write_report(run).read_text(encoding="utf-8")
    assert "could not be read" in text


def test_report_escapes_what_the_run_wrote(tmp_path: Path) -> None:
    """Run names, config values, metric keys and sample texts are data: the template escapes all of them."""
    run = _fake_run(tmp_path)
    evil = '<script>alert("x")</script>'
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "id": f"run-{evil}", "note": evil}))
    config = json.loads((run / "config.json").read_text())
    config["data"]["name"] = evil
    config[evil] = {"a&b": "x < y"}
    (run / "config.json").write_text(json.dumps(config))
    ev = json.loads((run / "eval" / "metrics.json").read_text())
    (run / "eval" / "metrics.json").write_text(json.dumps({**ev, evil: 1.5}))  # an uncatalogued metric key
    (run / "eval" / "samples.txt").write_text(f"a sample {evil}")
    text = write_report(run).read_text(encoding="utf-8")
    assert "<script" not in text and "alert(" in text  # there, but as text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
    assert "<title>GenLoop run run-&lt;script&gt;" in text and "a&amp;b" in text and "x &lt; y" in text
    _assert_self_contained(text)


def test_report_tables_follow_the_catalogue(tmp_path: Path) -> None:
    """Labels, "which way is better" and the ratio to the floor come from the metric catalogue."""
    from genloop.evaluation import catalog

    run = _fake_run(tmp_path)
    ev = json.loads((run / "eval" / "metrics.json").read_text())
    (run / "eval" / "metrics.json").write_text(
        json.dumps({**ev, "precision": 0.45, "precision_floor": 0.9, "kl_nats": 3.0})
    )
    text = write_report(run).read_text(encoding="utf-8")
    precision, kl = catalog.get("precision"), catalog.get("kl_nats")
    assert "50% of real" in text  # a higher-is-better score as a share of its floor
    assert f"<b>{precision.label.capitalize()}</b>: higher is better: {precision.help}" in text.replace("&#39;", "'")
    assert f"<b>{kl.label}</b>: {kl.help}" in text.replace("&#39;", "'")  # no better side: no direction claimed
    # catalogue order: FID before KID before precision, whatever order the file has them in
    assert text.index(">FID<") < text.index(">KID<") < text.index(">Precision (fidelity)<")


def test_report_not_a_run_dir(tmp_path: Path) -> None:
    from genloop.errors import NotFoundError

    with pytest.raises(NotFoundError):
        write_report(tmp_path)


def test_plot_losses(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    png = plot_losses(run / "metrics.jsonl", tmp_path / "plots" / "loss.png")
    assert png is not None and png.is_file()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 300
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"step": 1, "time": 0.1}\n')
    assert plot_losses(empty, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    assert plot_losses(tmp_path / "missing.jsonl", tmp_path / "none.png") is None


def test_old_recipes_read_with_one_key_per_count(tmp_path: Path) -> None:
    """Recipes written before the keys were split (``step``, ``steps``, ``sampler_steps``) read back under
    today's names, and an interpolation's ``steps`` (its points) never becomes a sampler step count."""
    sample = {"run_id": "r", "step": 500, "sampler": "ddim", "steps": 20, "seed": 3}
    lerp = {"run_id": "r", "step": 500, "kind": "interpolation", "rows": 6, "steps": 10, "sampler_steps": 50}
    save_png(tmp_path / "s.png", torch.zeros(1, 4, 4), sample)
    save_png(tmp_path / "l.png", torch.zeros(1, 4, 4), lerp)
    assert read_recipe(tmp_path / "s.png") == {
        "run_id": "r",
        "train_step": 500,
        "sampler": "ddim",
        "sampling_steps": 20,
        "seed": 3,
    }
    got = read_recipe(tmp_path / "l.png")
    assert got["interpolation_steps"] == 10 and got["sampling_steps"] == 50 and got["train_step"] == 500
    assert "steps" not in got and "step" not in got and "sampler_steps" not in got
