"""The studio's Edit tab in a real headless Chromium against a real `genloop serve`: drop an image, paint a mask
stroke with the mouse on the canvas over it, inpaint with a tiny DDPM, watch the job, then compare before and
after (the slider, dragged; side by side), download and recipe; the result is a generation in the gallery whose
known pixels are the input's (up to the watermark) and whose mask is exactly the painted one. Bad input is one
line in the error banner: no image, an empty mask, a non-image, an unreadable image, an option out of range, an
option the worker refuses. A VAE is listed as unable to edit; a class-conditional run edits (img2img of a JPEG of
another shape) towards a class with guidance. No horizontal overflow at 1400 and 390 px; a screenshot lands in
$GENLOOP_SCREENSHOTS/edit.png (else /tmp/studio_edit.png).

Same needs as tests/test_studio_browser.py (Playwright for Python and Debian's chromium), whose helpers it uses.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from pathlib import Path

import numpy as np
from conftest import tiny
from PIL import Image
from studio_support import screenshot
from test_studio_browser import banner, browser, call, open_page, serve  # noqa: F401 (browser: fixture)

import genloop

EMOJI = r"/[\u{1F000}-\u{1FAFF}\u{26A0}\u{2705}\u{274C}\u{1F512}]/gu"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of 8-bit pixels: the invisible watermark alone costs about 39 dB (safety/image_watermark.py)."""
    mse = float(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def drop_file(page, selector: str, data: bytes, name: str, mime: str) -> None:
    """Drop a file on an element as a person dragging it from their desktop would (a DragEvent with its files)."""
    page.evaluate(
        """([sel, b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            const drop = new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true});
            document.querySelector(sel).dispatchEvent(drop);
        }""",
        [selector, base64.b64encode(data).decode(), name, mime],
    )


def dismiss(page) -> None:
    page.click("#error-dismiss")
    assert not page.is_visible("#error-banner")


def test_edit_tab_inpaints_a_painted_mask_and_compares(tmp_path: Path, browser) -> None:  # noqa: F811
    ddpm = genloop.train("ddpm", overrides=tiny("ddpm"), steps=2, progress=False)
    vae = genloop.train("vae", overrides=tiny("vae"), steps=1, progress=False)
    cond = genloop.train("ddpm", overrides=tiny("ddpm", "model.class_conditional=true"), steps=1, progress=False)
    pixels = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)  # every pixel its own grey level
    (tmp_path / "note.txt").write_text("not a picture", encoding="utf-8")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really an image")

    with serve(tmp_path) as base:
        page, problems = open_page(browser, base)
        page.click("#tab-edit")
        assert page.is_visible("#view-edit")
        page.wait_for_selector(f"#edit-run option[value='{ddpm.id}']", state="attached")
        page.select_option("#edit-run", ddpm.id)
        # A VAE cannot edit: listed, disabled, with the reason in its group's label.
        vae_option = page.locator(f"#edit-run option[value='{vae.id}']")
        assert vae_option.is_disabled()
        assert "diffusion run" in vae_option.evaluate("o => o.parentElement.label")
        assert "8×8 px" in page.inner_text("#edit-run-note")
        # The tasks come from the run's descriptor; inpaint by default, with its options.
        tasks = page.eval_on_selector_all("#edit-task option", "os => os.map(o => o.value)")
        assert {"inpaint", "inpaint-fast", "img2img", "upscale", "deblur", "denoise"} <= set(tasks)
        assert "colorize" not in tasks  # a grey model: colourisation needs an RGB one
        assert page.input_value("#edit-task") == "inpaint"
        assert page.is_visible("#edit-opt-jump_length") and page.is_visible("#edit-opt-jump_n_sample")
        page.select_option("#edit-task", "img2img")
        assert page.is_visible("#edit-opt-strength") and not page.is_visible("#edit-opt-jump_length")
        assert page.get_attribute("#edit-opt-strength", "placeholder") == "0.6"
        page.select_option("#edit-task", "upscale")
        assert page.is_visible("#edit-opt-scale") and not page.is_visible("#edit-sampler-field")  # DDRM's own update
        page.select_option("#edit-task", "inpaint")
        assert page.is_visible("#edit-sampler-field")

        # No image yet: one line in the banner.
        page.click("#edit-submit")
        page.wait_for_selector("#error-banner:not([hidden])")
        assert banner(page) == "Choose or drop an image to edit first"
        dismiss(page)
        # Not an image, then a file named .png that is not one: refused in the page, the input unchanged.
        page.set_input_files("#edit-file", str(tmp_path / "note.txt"))
        page.wait_for_selector("#error-banner:not([hidden])")
        assert banner(page) == "note.txt is not an image: choose a PNG or JPEG file"
        dismiss(page)
        page.set_input_files("#edit-file", str(tmp_path / "broken.png"))
        page.wait_for_selector("#error-banner:not([hidden])")
        assert banner(page) == "broken.png is not an image this browser can read"
        dismiss(page)
        assert not page.is_visible("#edit-stage")

        # Drop the image on the drop zone: it shows with the mask canvas over it, at its own size.
        drop_file(page, "#edit-drop", png_bytes(Image.fromarray(pixels, "L")), "digit.png", "image/png")
        page.wait_for_selector("#edit-stage:not([hidden])")
        page.wait_for_function("document.querySelector('#edit-preview').naturalWidth === 8")
        assert page.eval_on_selector("#edit-mask", "c => [c.width, c.height]") == [8, 8]
        assert "digit.png · 8×8 px" in page.inner_text("#edit-file-info")
        assert page.is_visible("#edit-mask-tools")

        # An empty mask: refused before anything is uploaded.
        page.click("#edit-submit")
        page.wait_for_selector("#error-banner:not([hidden])")
        assert "mask is empty" in banner(page)
        dismiss(page)

        # Paint a stroke with the mouse (brush 2 px), erase its last pixel, then invert twice (a no-op).
        page.eval_on_selector("#edit-brush", "b => { b.value = '2'; b.dispatchEvent(new Event('input')); }")
        assert page.inner_text("#edit-brush-out") == "2 px"
        box = page.locator("#edit-mask").bounding_box()
        cell = box["width"] / 8
        at = lambda x, y: (box["x"] + (x + 0.5) * cell, box["y"] + (y + 0.5) * cell)  # noqa: E731 (pixel centre)
        page.mouse.move(*at(2, 3))
        page.mouse.down()
        page.mouse.move(*at(5, 3), steps=8)
        page.mouse.up()
        painted = int(page.get_attribute("#edit-mask", "data-filled"))
        assert 4 <= painted <= 16, painted
        page.check("[data-testid=edit-tool-eraser]")
        page.mouse.click(*at(5, 3))
        page.check("[data-testid=edit-tool-brush]")
        kept = int(page.get_attribute("#edit-mask", "data-filled"))
        assert kept < painted
        page.click("#edit-mask-invert")
        assert int(page.get_attribute("#edit-mask", "data-filled")) == 64 - kept
        page.click("#edit-mask-invert")
        assert int(page.get_attribute("#edit-mask", "data-filled")) == kept
        painted_mask = page.evaluate("async () => Array.from((await import('/static/edit.js')).edit.mask)")
        mask = np.array(painted_mask).reshape(8, 8)
        assert mask[3, 2] == 1 and mask[3, 4] == 1 and mask[3, 5] == 0 and mask[0, 0] == 0

        # A value the worker refuses (a jump longer than the 4 steps) comes back as the job's one-line error.
        page.fill("#edit-steps", "4")
        page.fill("#edit-opt-jump_length", "9")
        page.click("#edit-submit")
        page.wait_for_selector("#edit-job-status[data-status=failed]")
        page.wait_for_selector("#error-banner:not([hidden])")
        assert "jump_length must be between 1 and 4, got 9" in banner(page)
        failed = [x for x in problems if "jump_length" in x]  # the page logs a failed job as an error, as app.js does
        assert len(failed) == 1, problems
        problems.remove(failed[0])
        dismiss(page)

        # The edit: seed from the dice, then a fixed one; the job's progress; then before and after.
        page.fill("#edit-opt-jump_length", "")
        page.fill("#edit-opt-jump_n_sample", "2")
        page.click("[data-testid=edit-seed-random]")
        assert page.input_value("#edit-seed") != "0"
        page.fill("#edit-seed", "5")
        page.click("#edit-submit")
        page.wait_for_selector("#edit-job-status[data-status=succeeded]")
        page.wait_for_selector("#edit-result:not([hidden])")
        assert page.evaluate("document.querySelector('#edit-job-progress').value") == 1
        assert "done" in page.inner_text("#edit-job-label")
        gid = page.get_attribute("#edit-result", "data-generation-id")
        page.wait_for_function("document.querySelector('#edit-after').naturalWidth === 8")
        page.wait_for_function("document.querySelector('#edit-before').naturalWidth === 8")
        assert banner(page) == "", banner(page)

        # The result is a generation: in the gallery (page and API), its recipe names the uploads.
        gen = call(base, f"/v1/generations/{gid}")
        recipe = gen["recipe"]
        assert recipe["task"] == "inpaint" and recipe["seed"] == 5 and recipe["jump_n_sample"] == 2
        assert recipe["input_name"] == "digit" and recipe["input"].startswith("upload:")
        assert gid in [g["id"] for g in call(base, "/v1/generations")["generations"]]
        page.wait_for_selector(f"#gallery [data-testid=gen-card][data-id='{gid}']", state="attached")
        job = call(base, f"/v1/jobs/{gen['job_id']}")
        assert job["kind"] == "edit" and job["params"]["options"] == {"jump_n_sample": 2}
        assert job["params"]["steps"] == 4 and job["params"]["seed"] == 5
        # The server got exactly the painted mask (white = fill), at the input's size.
        uploaded = tmp_path / "runs" / "uploads" / job["params"]["mask"].split(":")[1] / "images" / "mask.png"
        with Image.open(uploaded) as im:
            assert im.size == (8, 8)
            assert np.array_equal(np.asarray(im.convert("L")) > 127, mask == 1)
        # Known pixels kept (up to the invisible watermark, ~39 dB), the painted ones redrawn.
        with urllib.request.urlopen(base + gen["image_url"], timeout=10) as r:
            out = np.asarray(Image.open(io.BytesIO(r.read())).convert("L")).astype(int)
        known = mask == 0
        assert psnr(out[known], pixels[known]) >= 33 and np.abs(out[known] - pixels[known]).max() <= 16
        assert np.abs(out[~known] - pixels[~known]).mean() > 8

        # Download and recipe.
        assert page.get_attribute("#edit-download", "href") == f"/v1/generations/{gid}/download"
        page.click("#edit-recipe")
        page.wait_for_selector("#recipe-dialog[open]")
        assert json.loads(page.inner_text("#recipe-json"))["recipe"]["input_sha256"] == recipe["input_sha256"]
        page.click("[data-testid=recipe-close]")

        # The slider: drag the divider to a quarter; the after image is clipped there.
        page.locator("#edit-compare").scroll_into_view_if_needed()
        compare = page.locator("#edit-compare").bounding_box()
        middle_y = compare["y"] + compare["height"] / 2
        page.mouse.move(compare["x"] + compare["width"] / 2, middle_y)
        page.mouse.down()
        page.mouse.move(compare["x"] + compare["width"] / 4, middle_y, steps=6)
        page.mouse.up()
        split = int(page.input_value("#edit-split"))
        assert 20 <= split <= 30, split
        assert f"{split}%" in page.evaluate("document.querySelector('#edit-after').style.clipPath")
        page.keyboard.press("ArrowRight")  # the divider is a range input: the keys move it too
        assert int(page.input_value("#edit-split")) == split + 1
        # Side by side, and back.
        page.check("[data-testid=edit-view-side]")
        assert page.is_visible("#edit-side") and not page.is_visible("#edit-compare")
        page.wait_for_function("document.querySelector('#edit-side-after').naturalWidth === 8")
        page.check("[data-testid=edit-view-slider]")
        assert page.is_visible("#edit-compare")

        assert page.evaluate(f"() => (document.body.innerText.match({EMOJI}) || [])") == []
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, "edit", full_page=True)
        for width in (1400, 390):
            page.set_viewport_size({"width": width, "height": 1000})
            page.click("#tab-gallery")
            page.click("#tab-edit")  # reachable at 390 px too: the tab bar scrolls instead of clipping it
            assert page.eval_on_selector(".tabs", "t => getComputedStyle(t).overflowX") == "auto"
            over = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert over <= 0, (width, over)
            wide = page.evaluate(
                """() => [...document.querySelectorAll('#view-edit *')].filter((e) => {
                    const r = e.getBoundingClientRect();
                    const v = document.querySelector('#view-edit').getBoundingClientRect();
                    return r.width > 0 && (r.right > v.right + 1 || r.left < v.left - 1);
                }).map((e) => e.id || e.className || e.tagName)"""
            )
            assert wide == [], (width, wide)
        screenshot(page, "edit_390", full_page=True)

        # A class-conditional run: img2img of a non-square JPEG towards a class, with guidance; a strength out of
        # (0, 1] is refused in the page.
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.select_option("#edit-run", cond.id)
        assert page.is_visible("#edit-class-fields")
        assert page.eval_on_selector_all("#edit-class option", "os => os.length") == 11  # none + 10 classes
        page.select_option("#edit-task", "img2img")
        assert not page.is_visible("#edit-mask-tools")  # img2img takes no mask
        photo = io.BytesIO()
        ramp = np.tile(np.linspace(0, 255, 12, dtype=np.uint8), (8, 1))
        Image.fromarray(ramp, "L").convert("RGB").save(photo, "JPEG")
        drop_file(page, "#view-edit", photo.getvalue(), "wide.jpg", "image/jpeg")  # anywhere on the tab
        page.wait_for_function("document.querySelector('#edit-preview').naturalWidth === 12")
        assert not page.is_visible("#edit-mask")
        page.fill("#edit-opt-strength", "1.5")
        page.click("#edit-submit")
        page.wait_for_selector("#error-banner:not([hidden])")
        assert banner(page) == "Strength must be more than 0 and at most 1"
        dismiss(page)
        page.fill("#edit-opt-strength", "0.5")
        page.select_option("#edit-class", "3")
        page.fill("#edit-guidance", "2")
        page.fill("#edit-steps", "4")
        page.click("#edit-submit")
        page.wait_for_function(f"document.querySelector('#edit-result').dataset.generationId !== '{gid}'")
        second = call(base, f"/v1/generations/{page.get_attribute('#edit-result', 'data-generation-id')}")
        params = call(base, f"/v1/jobs/{second['job_id']}")["params"]
        assert params["task"] == "img2img" and params["options"] == {"strength": 0.5} and "mask" not in params
        assert params["class_label"] == 3 and params["guidance"] == 2 and params["input"] != job["params"]["input"]
        assert second["recipe"]["input_size"] == [12, 8] and second["recipe"]["strength"] == 0.5
        # a JPEG goes up as the PNG of what the page showed (its EXIF rotation, if any, applied), so masks line up
        sent = tmp_path / "runs" / "uploads" / params["input"].split(":")[1] / "images"
        assert [f.name for f in sent.iterdir()] == ["wide.png"]
        assert "shown stretched to the input's 12×8" in page.inner_text("#edit-result-note")
        assert page.eval_on_selector("#edit-compare", "c => getComputedStyle(c).aspectRatio") == "12 / 8"
        assert banner(page) == "", banner(page)
        assert not problems, problems
        page.close()
