"""``genloop export RUN --format FORMAT``: a run in a format other tools load (see :mod:`genloop.export`)."""

from __future__ import annotations

from pathlib import Path

import typer


def export_command(
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix, or the run's folder)."),
    fmt: str = typer.Option(
        ...,
        "--format",
        help="transformers: a gpt run as a GPT-2 folder that transformers' AutoModelForCausalLM and AutoTokenizer "
        "load (logits equal GenLoop's); onnx: an image run's generator, VAE decoder or DDPM UNet step as "
        "model.onnx, checked with onnxruntime (needs: pip install onnx onnxruntime).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Folder to write (default: <run>/export/<format>)."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last, or best (runs trained with train.eval_every)."),
    runs_dir: Path | None = typer.Option(
        None, "--runs-dir", help="Run store folder (default: $GENLOOP_RUNS_DIR or ./runs)."
    ),
) -> None:
    """Export a run for other tools. The last line of standard output is the folder written."""
    from ..export import export_run

    print(str(export_run(run_id, fmt, out, runs_dir, checkpoint)), flush=True)
