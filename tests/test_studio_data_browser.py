"""The Jobs tab's data sets in a real headless Chromium against a real `genloop serve`: choose a zip of a folder of
small images (the file input), drop several images (a dispatched drop event), see what the server stored, train a
tiny VAE on the zip from the train form and see the job succeed, find the uploads again after a reload, get one
line in the banner for a bad file (random bytes named .zip); no horizontal overflow at 1400 and 390 px.

Same needs as tests/test_studio_browser.py (Playwright for Python and Debian's chromium), whose helpers it uses.
Its screenshot is ``data.png`` in $GENLOOP_SCREENSHOTS (``make screenshots``: docs/screenshots), else
/tmp/studio_data.png.
"""

from __future__ import annotations

import base64
import io
import json
import random
import zipfile
from pathlib import Path

import httpx
from conftest import tiny
from studio_support import screenshot
from test_studio_browser import banner, browser, call, open_page, serve  # noqa: F401 (browser: fixture)


def png(value: int, size: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (size, size), value).save(buf, "PNG")
    return buf.getvalue()


def image_zip(path: Path, n: int = 48) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n):
            z.writestr(f"shapes/{i:02d}.png", png(5 * i))
        z.writestr("shapes/README.txt", "small grey squares")
    return path


def no_overflow(page) -> None:
    for width in (1400, 390):
        page.set_viewport_size({"width": width, "height": 1000})
        over = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert over <= 0, (width, over)
        wide = page.evaluate(
            """() => [...document.querySelectorAll('#datasets *')].filter((e) => {
                const r = e.getBoundingClientRect();
                return r.width > 0 && r.right > document.documentElement.clientWidth + 1;
            }).map((e) => e.id || e.className || e.tagName)"""
        )
        assert wide == [], (width, wide)
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_upload_a_data_set_and_train_on_it(tmp_path: Path, browser) -> None:  # noqa: F811
    with serve(tmp_path) as base:
        page, problems = open_page(browser, base)
        page.click("#tab-jobs")
        page.wait_for_selector("#train-family option[value=vae]", state="attached")

        # A zip of a folder through the file input: what was stored, and the train form now offers it.
        page.set_input_files("#data-file", str(image_zip(tmp_path / "shapes.zip")))
        item = page.locator("[data-testid=data-item]").first
        item.wait_for()
        data = item.get_attribute("data-upload")
        assert data and data.startswith("upload:")
        facts = item.locator("[data-testid=data-facts]").inner_text()
        assert facts.startswith("zip · 48 images · 8×8 px") and "1 other file skipped" in facts, facts
        assert "vae" in item.locator("[data-testid=data-families]").inner_text()
        assert page.input_value("#train-data") == data  # chosen for the next training at once
        assert "shapes.zip" in page.inner_text("#data-status")
        assert banner(page) == ""

        # Several images dropped together: one data set of images.
        images = [base64.b64encode(png(v)).decode() for v in (10, 200)]
        page.evaluate(
            """(images) => {
                const dt = new DataTransfer();
                images.forEach((b64, i) => {
                    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                    dt.items.add(new File([bytes], `square${i}.png`, {type: "image/png"}));
                });
                const drop = new DragEvent("drop", {dataTransfer: dt, bubbles: true});
                document.querySelector("#data-drop").dispatchEvent(drop);
            }""",
            images,
        )
        page.wait_for_selector("[data-testid=data-item] >> nth=1")
        first = page.locator("[data-testid=data-item]").first
        assert first.locator("[data-testid=data-facts]").inner_text().startswith("2 images · 8×8 px · ")
        assert page.input_value("#train-data") == first.get_attribute("data-upload")

        # Train a tiny VAE on the zip from the Jobs tab.
        page.locator(f"[data-testid=data-item][data-upload='{data}'] [data-testid=data-use]").click()
        assert page.input_value("#train-data") == data
        page.select_option("#train-family", "vae")
        page.fill("#train-steps", "3")
        page.click("#train-form summary")
        page.fill("#train-overrides", "\n".join(tiny("vae")))
        page.click("#train-submit")
        page.wait_for_function(
            "document.querySelector('#job-detail-status')?.textContent === 'succeeded'", timeout=120_000
        )
        [job] = [j for j in call(base, "/v1/jobs")["jobs"] if j["kind"] == "train"]
        assert job["params"]["data"] == data and job["status"] == "succeeded"
        run = json.loads((tmp_path / "runs" / job["result"]["run_id"] / "run.json").read_text(encoding="utf-8"))
        assert run["status"] == "finished" and run["step"] == 3 and run["dataset"].endswith("images")

        # After a reload the uploads are listed again and still offered to the train form; the input of an edit
        # (an upload of purpose "input") is not a data set and stays out of the list.
        edit_input = httpx.post(f"{base}/v1/uploads", files={"file": ("photo.png", png(9))}, data={"purpose": "input"})
        assert edit_input.status_code == 201, edit_input.text
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        page.click("#tab-jobs")
        page.wait_for_selector("[data-testid=data-item] >> nth=1")
        assert page.locator("[data-testid=data-item]").count() == 2
        page.wait_for_selector(f"#train-data option[value='{data}']", state="attached")

        # A bad file: one line in the banner, nothing stored.
        page.set_input_files(
            "#data-file",
            files=[{"name": "broken.zip", "mimeType": "application/zip", "buffer": random.Random(0).randbytes(2048)}],
        )
        page.wait_for_selector("#error-banner:not([hidden])")
        text = banner(page)
        assert text == "Upload of broken.zip refused: the file is not a valid zip archive", text
        assert len(call(base, "/v1/uploads?purpose=data")["uploads"]) == 2
        expected = [x for x in problems if "status of 422" in x]  # Chromium logs the 422 answer itself
        assert len(expected) == 1, problems
        problems.remove(expected[0])
        page.click("#error-dismiss")

        row = page.locator(f"[data-testid=job-row][data-id='{job['id']}']")
        assert row.locator(".job-what").inner_text() == "vae on shapes.zip, 3 steps"  # the upload by its name
        row.click()  # its detail and loss curve beside the panel
        page.wait_for_function("document.querySelector('#job-detail-status')?.textContent === 'succeeded'")
        page.wait_for_selector("#loss-legend > *")
        assert page.inner_text("#job-detail-title").startswith("Train vae on shapes.zip · ")
        no_overflow(page)
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, "data")
        assert not problems, problems
