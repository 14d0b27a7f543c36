"""Pipeline outputs show themselves in Jupyter: the methods IPython calls, called directly."""

from __future__ import annotations

import io

import numpy as np
import torch
from conftest import tiny
from PIL import Image

import genloop
from genloop.generation.pipelines import ImageOutput
from genloop.generation.text_pipeline import TextOutput


def test_image_output_shows_its_grid_as_png() -> None:
    run = genloop.train("dcgan", data="digits", overrides=tiny("dcgan"), steps=1, progress=False)
    out = genloop.load(run.id)(n=6, seed=0)
    png = out._repr_png_()
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width >= 256
    assert png == genloop.load(run.id)(n=6, seed=0)._repr_png_()  # same seed, same picture
    assert png != genloop.load(run.id)(n=6, seed=1)._repr_png_()


def test_grid_layout_and_enlargement() -> None:
    t = torch.linspace(-1, 1, 4 * 3 * 8 * 8).reshape(4, 3, 8, 8)
    img = Image.open(io.BytesIO(ImageOutput(t, {"seed": 0})._repr_png_()))
    # 2 x 2 tiles of 8 px with 2 px padding around and between: 22 px, enlarged by a whole factor to >= 256
    assert img.size == (22 * 12, 22 * 12) and img.mode == "RGB"
    px = np.asarray(img)
    assert (px[:12] == 255).all()  # the white frame, enlarged 12x


def test_text_output_shows_prompt_completion_and_recipe_escaped() -> None:
    recipe = {"run_id": "r1", "seed": 5, "temperature": 0.8, "stop": ["\n"]}
    out = TextOutput(["<script>alert(1)</script> & more", "second"], "Once <b>", recipe)
    page = out._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "Once &lt;b&gt;" in page and "sample 1 (seed 6)" in page
    assert "<code>temperature</code></td><td>0.8" in page and "<code>run_id</code></td><td>r1" in page
    md = out._repr_markdown_()
    assert "```text\nOnce <b><script>alert(1)</script> & more\n```" in md
    assert "`temperature`: 0.8" in md and "**sample 1** (seed 6)" in md
    single = TextOutput(["x"], "", {"seed": 0})._repr_html_()
    assert "sample 0" not in single  # one completion: no sample headings
