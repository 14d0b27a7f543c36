"""How pipeline outputs show themselves in Jupyter: ``out = pipe(n=16)`` as the last line of a cell draws them.

Why: IPython asks an object for ``_repr_png_`` / ``_repr_html_`` / ``_repr_markdown_`` and shows the richest it
gets; an output that has none prints as a dataclass repr of tensors. The outputs' methods call these functions
(one home for how an output looks in a notebook), and each returns plain data (PNG bytes, an HTML string) so
tests call them without a notebook.

- images: the batch as one grid PNG (near square; tiny images enlarged with nearest-neighbour so 8 px digits
  are visible), the same grid ``genloop generate`` writes;
- text: each completion after its prompt (the prompt set apart), and the recipe (run, checkpoint, sampler
  settings, seed) in a table under it; HTML is escaped, so a generated ``<script>`` is shown, never run.
"""

from __future__ import annotations

import html
import io
import json
from typing import Any

DISPLAY_MIN_PX = 256  # a grid narrower than this is enlarged (by a whole factor, nearest neighbour)


def image_grid_png(tensors: Any, nrow: int | None = None) -> bytes:
    """The images (N, C, H, W) in [-1, 1] as one PNG grid, enlarged to at least :data:`DISPLAY_MIN_PX` wide."""
    from PIL import Image

    from ..data.image_io import make_grid, tensor_to_pil

    if tensors.shape[0] == 0:
        raise ValueError("no images to show")
    img = tensor_to_pil(make_grid(tensors.float().cpu(), nrow=nrow))
    factor = max(1, -(-DISPLAY_MIN_PX // img.width))
    if factor > 1:
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _recipe_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)


def text_html(texts: list[str], prompt: str, recipe: dict[str, Any]) -> str:
    """Completions after their prompt (set apart in grey), then the recipe as a two-column table; all escaped."""
    e = html.escape
    items = []
    for i, t in enumerate(texts):
        head = f"<div style='color:#6b7280;font-size:smaller'>sample {i} (seed {recipe.get('seed', 0) + i})</div>"
        body = f"<span style='color:#6b7280'>{e(prompt)}</span>{e(t)}"
        items.append(f"{head if len(texts) > 1 else ''}<pre style='white-space:pre-wrap;margin:0 0 .5em'>{body}</pre>")
    rows = "".join(
        f"<tr><td><code>{e(str(k))}</code></td><td>{e(_recipe_value(v))}</td></tr>" for k, v in recipe.items()
    )
    return (
        "<div class='genloop-text'>"
        + "".join(items)
        + f"<details><summary>recipe</summary><table>{rows}</table></details></div>"
    )


def text_markdown(texts: list[str], prompt: str, recipe: dict[str, Any]) -> str:
    """The same as Markdown: each completion (after its prompt) in a fenced block, then the recipe as a list."""
    fence = "````" if "```" in prompt + "".join(texts) else "```"
    parts = []
    for i, t in enumerate(texts):
        if len(texts) > 1:
            parts.append(f"**sample {i}** (seed {recipe.get('seed', 0) + i})")
        parts.append(f"{fence}text\n{prompt}{t}\n{fence}")
    parts.append("recipe: " + ", ".join(f"`{k}`: {_recipe_value(v)}" for k, v in recipe.items()))
    return "\n\n".join(parts)
