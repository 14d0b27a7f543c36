"""The gallery's workbench in a real headless Chromium against a real `genloop serve`: generate with a tiny VAE,
open a card in the lightbox (full size, recipe beside it), step to the next with the arrow keys, download one
file, tick two cards and download them as a zip (its members checked), put a generation's settings back in the
form (switching the model), save / apply / delete a named preset (kept by the server), and see the note a text
job leaves when its prompt was cut to the model's context; no horizontal overflow at 1400 and 390 px.

Same needs as tests/test_studio_browser.py (Playwright for Python and Debian's chromium), whose helpers it uses.
Screenshots (studio_support.screenshot: $GENLOOP_SCREENSHOTS, else /tmp/studio_<name>.png): gallery_workbench,
gallery_lightbox and gallery_390.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from conftest import tiny
from studio_support import screenshot
from test_studio_browser import TINY_GPT, banner, browser, call, open_page, serve  # noqa: F401 (browser: fixture)

import genloop


def overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_gallery_lightbox_zip_reuse_presets_and_prompt_notes(tmp_path: Path, browser) -> None:  # noqa: F811
    vae = genloop.train("vae", data="digits", overrides=tiny("vae"), steps=3, progress=False)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog ran to the log. " * 20, encoding="utf-8")
    gpt = genloop.train("gpt", data=str(corpus), overrides=TINY_GPT, steps=3, progress=False)

    with serve(tmp_path) as base:
        page, problems = open_page(browser, base)
        page.select_option("#model-select", vae.id)
        page.fill("#img-n", "3")
        page.fill("#img-seed", "5")
        page.click("#generate-button")
        page.wait_for_selector("#gen-job-status[data-status=succeeded]")
        page.wait_for_function("document.querySelectorAll('#gallery [data-testid=gen-card]').length === 3")
        assert page.is_hidden("#gen-notes")  # an image job has no prompt to warn about
        ids = page.eval_on_selector_all("#gallery [data-testid=gen-card]", "cs => cs.map(c => c.dataset.id)")
        cards = {gid: page.locator(f"#gallery [data-testid=gen-card][data-id='{gid}']") for gid in ids}
        for card in cards.values():  # every output offers its signed file
            assert card.locator("[data-testid=download-link]").get_attribute("href").endswith("/download")

        # The lightbox: the image at full size with its recipe; arrows step through the gallery; Escape closes.
        cards[ids[0]].locator("[data-testid=gen-image]").click()
        box = page.locator("#lightbox")
        box.wait_for()
        assert box.get_attribute("data-id") == ids[0] and page.inner_text("#lightbox-position") == "1 of 3"
        assert json.loads(page.inner_text("#lightbox-recipe"))["generation_id"] == ids[0]
        page.wait_for_function("() => document.querySelector('[data-testid=lightbox-image]')?.naturalWidth > 0")
        assert page.inner_text("[data-testid=lightbox-size]").startswith("8 × 8 px")
        assert page.locator("#lightbox-prev").is_disabled()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"() => document.querySelector('#lightbox').dataset.id === '{ids[1]}'")
        assert page.inner_text("#lightbox-position") == "2 of 3"
        recipe = json.loads(page.inner_text("#lightbox-recipe"))
        assert recipe["generation_id"] == ids[1]
        assert recipe["recipe"] == call(base, f"/v1/generations/{ids[1]}")["recipe"]
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")  # already the last: stays
        assert box.get_attribute("data-id") == ids[2] and page.locator("#lightbox-next").is_disabled()
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(f"() => document.querySelector('#lightbox').dataset.id === '{ids[1]}'")

        # Download the one on show: the signed PNG, byte for byte what the API serves.
        with page.expect_download() as dl:
            page.click("#lightbox-download")
        assert dl.value.suggested_filename == f"genloop-{ids[1]}.png"
        dl.value.save_as(tmp_path / "one.png")
        with open(tmp_path / "one.png", "rb") as f:
            import urllib.request

            with urllib.request.urlopen(f"{base}/v1/generations/{ids[1]}/download", timeout=10) as r:
                assert f.read() == r.read()
        page.set_viewport_size({"width": 390, "height": 800})  # the lightbox fits a phone
        assert page.evaluate("document.querySelector('#lightbox').getBoundingClientRect().right") <= 390
        page.set_viewport_size({"width": 1400, "height": 1000})
        screenshot(page, "gallery_lightbox")
        page.keyboard.press("Escape")
        page.wait_for_selector("#lightbox", state="hidden")

        # Tick two cards and download them as one zip: their signed files and recipes.jsonl.
        assert page.locator("#zip-download").is_disabled()
        cards[ids[2]].locator("[data-testid=zip-pick]").check()
        cards[ids[0]].locator("[data-testid=zip-pick]").check()
        assert page.inner_text("#zip-download") == "Download selected (2) as zip"
        with page.expect_download() as dl:
            page.click("#zip-download")
        assert dl.value.suggested_filename == "genloop-2-generations.zip"
        dl.value.save_as(tmp_path / "two.zip")
        with zipfile.ZipFile(tmp_path / "two.zip") as z:
            assert z.namelist() == [f"genloop-{ids[2]}.png", f"genloop-{ids[0]}.png", "recipes.jsonl"]
            lines = [json.loads(x) for x in z.read("recipes.jsonl").decode().splitlines()]
        assert [x["generation_id"] for x in lines] == [ids[2], ids[0]]
        assert {x["recipe"]["seed"] for x in lines} <= {5, 6, 7}

        # Use these settings: from the text model's form, a card's settings switch back to the VAE and its seed.
        page.select_option("#model-select", gpt.id)
        assert page.is_visible("[data-testid=text-controls]")
        seed = call(base, f"/v1/generations/{ids[1]}")["recipe"]["seed"]
        cards[ids[1]].locator("[data-testid=use-settings]").click()
        assert page.input_value("#model-select") == vae.id and page.is_visible("[data-testid=image-controls]")
        assert page.input_value("#img-seed") == str(seed)
        # ... and from the lightbox
        page.fill("#img-seed", "0")
        cards[ids[2]].locator("[data-testid=gen-image]").click()
        page.click("#lightbox-use")
        page.wait_for_selector("#lightbox", state="hidden")
        assert page.input_value("#img-seed") == str(call(base, f"/v1/generations/{ids[2]}")["recipe"]["seed"])

        # Presets: save the form under a name, change the form, apply it back, refuse a duplicate, delete it.
        page.wait_for_selector("#presets:not([hidden])")
        page.fill("#img-n", "2")
        page.fill("#img-seed", "42")
        page.fill("#preset-name", "Two at 42")
        page.press("#preset-name", "Enter")  # saves; does not generate
        page.wait_for_selector("#preset-select option:text('Two at 42')", state="attached")
        [saved] = call(base, f"/v1/presets?run_id={vae.id}")["presets"]
        assert saved["name"] == "Two at 42" and saved["params"] == {"n": 2, "seed": 42, "checkpoint": "last"}
        assert page.inner_text("#gen-job-label").startswith("3 ×")  # no new generate job started
        page.fill("#img-n", "7")
        page.fill("#img-seed", "1")
        page.select_option("#preset-select", saved["id"])
        page.click("#preset-apply")
        assert page.input_value("#img-n") == "2" and page.input_value("#img-seed") == "42"
        page.fill("#preset-name", "Two at 42")
        page.click("#preset-save")
        page.wait_for_selector("#error-banner:not([hidden])")
        assert "already has a preset named 'Two at 42'" in banner(page)
        expected = [x for x in problems if "status of 409" in x]  # Chromium logs the 409 answer
        assert len(expected) == 1, problems
        problems.remove(expected[0])
        page.click("#error-dismiss")
        page.select_option("#preset-select", saved["id"])
        page.click("#preset-delete")
        page.wait_for_function("() => !document.querySelector('#preset-select option[value]:not([value=\"\"])')")
        assert call(base, f"/v1/presets?run_id={vae.id}")["presets"] == []

        # A text prompt longer than the model's context: the job's note reaches the page, then clears.
        page.select_option("#model-select", gpt.id)
        page.fill("#txt-prompt", "the cat sat on the mat. " * 3)
        page.fill("#txt-max-tokens", "3")
        page.click("#generate-button")
        page.wait_for_selector("#gen-notes:not([hidden])")
        note = page.inner_text("#gen-notes")
        assert "the model's context is 16" in note and "truncated" in note
        assert page.get_attribute("#gen-job-status", "data-status") == "succeeded" and banner(page) == ""
        text_card = page.locator("#latest-grid [data-testid=gen-card]").first
        text_card.locator("[data-testid=gen-text]").click()  # a text opens in the lightbox too
        page.wait_for_selector("#lightbox [data-testid=lightbox-text]")
        page.keyboard.press("Escape")
        page.select_option("#gallery-filter", "")
        page.evaluate("window.scrollTo(0, 0)")
        cards[ids[0]].locator("[data-testid=zip-pick]").wait_for()
        screenshot(page, "gallery_workbench")
        page.fill("#txt-prompt", "the cat")
        before = page.get_attribute("#gen-job", "data-job-id")
        page.click("#generate-button")
        page.wait_for_function(
            "old => document.querySelector('#gen-job').dataset.jobId !== old"
            " && document.querySelector('#gen-job-status').dataset.status === 'succeeded'"
            " && document.querySelector('#generate-button').getAttribute('aria-busy') === 'false'",
            arg=before,
        )
        assert page.is_hidden("#gen-notes")  # a prompt that fits leaves no note

        for width in (1400, 390):
            page.set_viewport_size({"width": width, "height": 900})
            assert overflow(page) <= 0, (width, overflow(page))
        screenshot(page, "gallery_390")
        assert banner(page) == "", banner(page)
        assert not problems, problems
        page.close()
