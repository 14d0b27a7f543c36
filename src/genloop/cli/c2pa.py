"""``genloop c2pa FILE... [--out DIR]``: GenLoop PNGs re-issued with a C2PA manifest (see
:mod:`genloop.safety.c2pa_export`; needs the optional c2pa-python)."""

from __future__ import annotations

from pathlib import Path

import typer


def c2pa_command(
    files: list[Path] = typer.Argument(..., metavar="FILE...", help="Generated PNGs with a valid GenLoop manifest."),
    out: Path | None = typer.Option(None, "--out", help="Folder to write into (default: beside each input)."),
) -> None:
    """Write <name>.c2pa.png per input: the same pixels and GenLoop manifest plus a C2PA manifest (created by a
    trained model, with the generation id, model sha256 and recipe) signed with this installation's key under a
    self-signed certificate, so C2PA validators call it intact but the signer untrusted. PNG only; needs
    `pip install c2pa-python`. One line per file written."""
    from ..safety.c2pa_export import SUFFIX, export_c2pa, require_c2pa

    require_c2pa()  # say "pip install c2pa-python" before reading any file
    for path in files:
        name = path.name[: -len(".png")] if path.name.lower().endswith(".png") else path.name
        print(str(export_c2pa(path, (out or path.parent) / f"{name}{SUFFIX}")), flush=True)
