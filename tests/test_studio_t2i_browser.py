"""Text to image in GenLoop Studio in a real headless Chromium: a ddpm-text run's descriptor gives the image form a
prompt box (and guidance), the prompt reaches the job and every image's recipe, and a plain image run has no box.

Needs Playwright for Python and Debian's chromium (skipped otherwise, like tests/test_studio_browser.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny
from studio_support import screenshot
from test_studio_browser import banner, browser, call, open_page, serve  # noqa: F401 - browser is a fixture

import genloop


@pytest.mark.slow
def test_prompt_box_for_text_to_image_runs(tmp_path: Path, browser) -> None:  # noqa: F811
    t2i = genloop.train("ddpm-text", data="digits-captions", overrides=tiny("ddpm-text"), steps=2, progress=False)
    vae = genloop.train("vae", data="digits", overrides=tiny("vae"), steps=2, progress=False)
    with serve(tmp_path) as base:
        page, problems = open_page(browser, base)
        page.select_option("#model-select", vae.id)
        assert page.is_visible("[data-testid=image-controls]") and not page.is_visible("[data-testid=img-prompt]")

        page.select_option("#model-select", t2i.id)
        assert page.is_visible("[data-testid=img-prompt]") and page.is_visible("[data-testid=img-guidance]")
        page.fill("#img-n", "2")
        page.fill("#img-steps", "2")
        page.fill("#img-prompt", "一个粗的数字七")
        page.fill("#img-guidance", "3")
        page.click("#generate-button")
        page.wait_for_selector("#gen-job-status[data-status=succeeded]")
        page.wait_for_function("document.querySelectorAll('#latest-grid [data-testid=gen-card]').length === 2")
        ids = page.eval_on_selector_all("#latest-grid [data-testid=gen-card]", "cs => cs.map(c => c.dataset.id)")
        g = call(base, f"/v1/generations/{ids[0]}")
        assert g["recipe"]["prompt"] == "一个粗的数字七" and g["recipe"]["guidance"] == 3.0
        assert "一个粗的数字七" in page.inner_text(f"#latest-grid [data-testid=gen-card][data-id='{ids[0]}']")

        for width in (1400, 390):
            page.set_viewport_size({"width": width, "height": 1000})
            over = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert over <= 0, (width, over)
        page.set_viewport_size({"width": 1400, "height": 1000})
        screenshot(page, "t2i")
        assert not problems, problems
        page.close()
