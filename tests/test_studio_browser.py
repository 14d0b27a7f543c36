"""GenLoop Studio in a real headless Chromium: the page against a real `genloop serve` (with its worker).

Train a tiny VAE through the Python API, serve the runs dir, then drive the page like a person: pick the
model, generate, see each card's verified badge, rate (thumbs up + 4 stars), reload and see the rating kept
(and in the API), look at the recipe, replay (identical), A/B-compare two generations, verify files (a
download, a stripped copy traced by its watermark, a tampered one, a non-image, a dropped text), train a model
from the Jobs tab and watch its progress bar move and its loss curve, see each lane's queue; check the page for
emoji (icons are inline SVG) and horizontal overflow at two widths; then restart the server with a token and
check the page asks for it and works once given.

Needs Playwright for Python and Debian's chromium (`apt-get install chromium`); no browser download.
Screenshots of the gallery, the Jobs and Verify tabs land in /tmp/studio_*.png, or in $GENLOOP_SCREENSHOTS
(`make screenshots`: docs/screenshots, the README's pictures).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import conftest
import pytest
from conftest import cli_env, tiny
from studio_support import screenshot

CHROMIUM = os.environ.get("GENLOOP_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"no Chromium at {CHROMIUM} (apt-get install chromium, or set GENLOOP_CHROMIUM)", allow_module_level=True
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)

import genloop  # noqa: E402

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # worker jobs on a busy 2-core machine: generous, they normally take a second or two


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, path: str, token: str | None = None, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@contextmanager
def serve(tmp_path: Path, token: str | None = None) -> Iterator[str]:
    """`genloop serve` (plus its worker) on a free loopback port; yields the base URL."""
    port = free_port()
    env = cli_env(tmp_path)
    env.pop("GENLOOP_API_TOKEN", None)
    if token:
        env["GENLOOP_API_TOKEN"] = token
    log = (tmp_path / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "genloop.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"genloop serve exited ({proc.returncode}):\n{Path(log.name).read_text()}")
            try:
                if call(base, "/v1/health")["status"] == "ok":
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"genloop serve not healthy in 90 s:\n{Path(log.name).read_text()}")
            time.sleep(0.25)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the server stops its worker(s) on the way out
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of this server's own session still alive
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_page(browser, base: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready=true]")
    return page, problems


def banner(page) -> str:
    return page.inner_text("#error-text") if page.is_visible("#error-banner") else ""


TINY_GPT = [*conftest.TINY_GPT, "train.warmup_steps=2"]


def test_studio_page_generate_rate_replay_ab_train(tmp_path: Path, browser) -> None:
    run = genloop.train("vae", data="digits", overrides=tiny("vae"), steps=3, progress=False)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def add(a, b):\n    return a + b\n\n" * 40, encoding="utf-8")
    text_run = genloop.train("gpt", data=str(corpus), overrides=TINY_GPT, steps=3, progress=False)

    with serve(tmp_path) as base:
        page, problems = open_page(browser, base)
        assert page.title() == "GenLoop Studio"
        assert page.get_attribute("#health", "data-state") == "ok"

        # Pick the model: the image controls appear, the text ones don't.
        page.select_option("#model-select", run.id)
        assert page.is_visible("[data-testid=image-controls]") and not page.is_visible("[data-testid=text-controls]")
        assert page.inner_text("#model-info dd[data-key=family]") == "vae"
        assert page.inner_text("#model-info dd[data-key=run]") == run.id  # the full id, never cut off
        assert not page.is_visible("#class-field") and not page.is_visible("#diffusion-fields")

        # A bad value is refused in the page, visibly, and the message can be dismissed.
        page.fill("#img-n", "100")
        page.click("#generate-button")
        page.wait_for_selector("#error-banner:not([hidden])")
        assert "from 1 to 64" in banner(page)
        page.click("#error-dismiss")
        assert not page.is_visible("#error-banner")

        # Generate two images; the 🎲 gives a random seed, then a fixed one.
        page.fill("#img-n", "2")
        page.click("[data-testid=img-seed-random]")
        assert page.input_value("#img-seed") != ""
        page.fill("#img-seed", "7")
        page.click("#generate-button")
        page.wait_for_selector("#gen-job-status[data-status=succeeded]")
        page.wait_for_function("document.querySelectorAll('#latest-grid [data-testid=gen-card]').length === 2")
        ids = page.eval_on_selector_all("#latest-grid [data-testid=gen-card]", "cs => cs.map(c => c.dataset.id)")
        gen_id, other_id = ids
        card = page.locator(f"#gallery [data-testid=gen-card][data-id='{gen_id}']")
        img = card.locator("[data-testid=gen-image]")
        img.wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        assert call(base, f"/v1/jobs/{call(base, f'/v1/generations/{gen_id}')['job_id']}")["params"]["seed"] == 7
        assert banner(page) == "", banner(page)
        # Each card says whether its stored file verifies (the server checked the signed PNG) and offers it.
        assert card.locator("[data-testid=verified-badge]").get_attribute("data-status") == "valid"
        assert "Verified" in card.locator("[data-testid=verified-badge]").inner_text()
        assert card.locator("[data-testid=download-link]").get_attribute("href") == f"/v1/generations/{gen_id}/download"
        kind = page.evaluate(
            "a => fetch(a.href).then(r => r.ok && r.headers.get('content-type'))",
            card.locator("[data-testid=download-link]").element_handle(),
        )
        assert kind == "image/png"

        # Verify a file: the downloaded PNG (valid), its pixels without metadata (unsigned, but the watermark
        # names the generation and its recipe comes back), a tampered copy, a non-image, a dropped text.
        from PIL import Image, PngImagePlugin

        with urllib.request.urlopen(base + f"/v1/generations/{gen_id}/download", timeout=10) as r:
            signed = r.read()
        (tmp_path / "signed.png").write_bytes(signed)
        with Image.open(io.BytesIO(signed)) as im:
            im.load()
            chunk, pixels = im.text["genloop-manifest"], im.copy()
        pixels.save(tmp_path / "stripped.png")
        forged = json.loads(chunk)
        forged["manifest"]["recipe"]["seed"] = 1234
        info = PngImagePlugin.PngInfo()
        info.add_itxt("genloop-manifest", json.dumps(forged))
        pixels.save(tmp_path / "forged.png", pnginfo=info)
        (tmp_path / "photo.png").write_bytes(b"not a picture at all")

        page.click("#tab-verify")
        page.set_input_files("#verify-file", str(tmp_path / "signed.png"))
        page.wait_for_selector("#verify-result[data-status=valid]")
        assert page.inner_text("#verify-facts dd[data-key=generation]") == gen_id
        assert "found: generation " + gen_id in page.inner_text("#verify-facts dd[data-key=watermark]")
        assert json.loads(page.inner_text("#verify-recipe"))["seed"] == 7
        page.set_input_files("#verify-file", str(tmp_path / "stripped.png"))
        page.wait_for_selector("#verify-result[data-status=unsigned]")
        assert "found: generation " + gen_id in page.inner_text("#verify-facts dd[data-key=watermark]")
        assert "studio database" in page.inner_text("#verify-recipe-title")
        page.set_input_files("#verify-file", str(tmp_path / "forged.png"))
        page.wait_for_selector("#verify-result[data-status=tampered]")
        assert "recipe" in page.inner_text("#verify-detail")
        page.set_input_files("#verify-file", str(tmp_path / "photo.png"))
        page.wait_for_selector("#verify-result[data-status=error]")
        assert "not a PNG" in page.inner_text("#verify-detail") and banner(page) == ""
        expected = [x for x in problems if "status of 422" in x]  # Chromium logs the 422 answer to photo.png
        assert len(expected) == 1, problems
        problems.remove(expected[0])
        page.evaluate(
            """() => {
                const dt = new DataTransfer();
                dt.items.add(new File(["an ordinary note nobody signed"], "note.txt", {type: "text/plain"}));
                const drop = new DragEvent("drop", {dataTransfer: dt, bubbles: true});
                document.querySelector("#verify-drop").dispatchEvent(drop);
            }"""
        )
        page.wait_for_selector("#verify-result[data-status=unsigned]")
        assert page.inner_text("#verify-filename") == "note.txt"
        screenshot(page, "verify")
        page.click("#tab-gallery")

        # Rate it: thumbs up, then 4 stars; the saved summary comes back from the server.
        summary = card.locator("[data-testid=feedback-summary]")
        assert summary.inner_text() == "Not rated yet"
        card.locator("[data-testid=thumbs-up]").click()
        page.wait_for_function("s => s.dataset.up === '1'", arg=summary.element_handle())
        card.locator("[data-testid=star-4]").click()
        page.wait_for_function("s => s.dataset.stars === '4'", arg=summary.element_handle())
        assert card.locator("[data-testid=thumbs-up]").get_attribute("aria-pressed") == "true"

        # Reload: the rating is still there (from the server, not the page's memory) and in the API.
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        card = page.locator(f"#gallery [data-testid=gen-card][data-id='{gen_id}']")
        summary = card.locator("[data-testid=feedback-summary]")
        assert summary.get_attribute("data-up") == "1" and summary.get_attribute("data-stars") in ("4", "4.0")
        assert "★ 4.0" in summary.inner_text() and summary.locator("svg use").count() == 2  # icons, not emoji
        g = call(base, f"/v1/generations/{gen_id}")
        assert g["feedback"]["up"] == 1 and g["feedback"]["down"] == 0 and g["feedback"]["stars"] == 4
        ratings = call(base, f"/v1/generations/{gen_id}/ratings")["ratings"]
        assert {(r["thumbs"], r["stars"]) for r in ratings} == {(1, None), (None, 4)}

        # The recipe dialog shows the full recipe as JSON.
        card.locator("[data-testid=recipe-button]").click()
        page.wait_for_selector("#recipe-dialog[open]")
        recipe = json.loads(page.inner_text("#recipe-json"))
        assert recipe["generation_id"] == gen_id and recipe["recipe"]["run_id"] == run.id
        page.click("[data-testid=recipe-close]")
        assert not page.is_visible("#recipe-dialog")

        # Replay: the worker makes it again, bit for bit.
        card.locator("[data-testid=replay-button]").click()
        replay_result = card.locator("[data-testid=replay-result]")
        page.wait_for_function("r => r.dataset.identical !== undefined", arg=replay_result.element_handle())
        assert replay_result.get_attribute("data-identical") == "true" and "identical" in replay_result.inner_text()
        replays = [
            x
            for x in call(base, f"/v1/generations?run_id={run.id}&limit=50")["generations"]
            if x["replay_of"] == gen_id
        ]
        assert len(replays) == 1
        page.wait_for_selector(f"#gallery [data-testid=gen-card][data-id='{replays[0]['id']}']")

        # A/B: tick the two generations in the gallery, compare, prefer B.
        page.locator(f"#gallery [data-testid=gen-card][data-id='{gen_id}'] [data-testid=ab-pick]").check()
        page.locator(f"#gallery [data-testid=gen-card][data-id='{other_id}'] [data-testid=ab-pick]").check()
        page.click("#ab-compare-selected")
        page.wait_for_selector("#ab-arena:not([hidden])")
        assert page.get_attribute("#ab-a", "data-id") == gen_id and page.get_attribute("#ab-b", "data-id") == other_id
        page.click("#ab-choose-b")
        page.wait_for_selector("#ab-result:not([hidden])")
        prefs = call(base, "/v1/preferences")["preferences"]
        assert [(p["chosen_id"], p["rejected_id"]) for p in prefs] == [(other_id, gen_id)]
        page.wait_for_function("document.querySelector('#ab-count').textContent === '1'")
        # ...and a random pair of the same model, chosen with the keyboard.
        page.select_option("#ab-model", run.id)
        page.click("#ab-random")
        page.wait_for_function("!document.querySelector('#ab-choose-a').disabled")
        page.keyboard.press("a")
        page.wait_for_function("document.querySelector('#ab-count').textContent === '2'")
        assert len(call(base, "/v1/preferences")["preferences"]) == 2

        # A text model: its own controls; the completion streams into the page piece by piece, then a card.
        page.select_option("#model-select", text_run.id)
        assert page.is_visible("[data-testid=text-controls]") and not page.is_visible("[data-testid=image-controls]")
        page.fill("#txt-prompt", "def ")
        page.fill("#txt-max-tokens", "24")
        page.fill("#txt-stop", "")
        page.click("#generate-button")
        page.wait_for_selector("#gen-job-status[data-status=succeeded]")
        page.wait_for_selector("#latest-grid [data-testid=gen-card][data-modality=text]")
        text_id = page.get_attribute("#latest-grid [data-testid=gen-card]", "data-id")
        text_gen = call(base, f"/v1/generations/{text_id}")
        assert text_gen["modality"] == "text" and text_gen["prompt"] == "def "
        assert page.inner_text("#stream-output") == text_gen["text"]  # the streamed pieces add up to the result
        assert page.inner_text("#latest-grid [data-testid=gen-text]") == "def " + text_gen["text"]
        text_card = page.locator(f"#gallery [data-testid=gen-card][data-id='{text_id}']")
        assert text_card.locator("[data-testid=verified-badge]").get_attribute("data-status") == "valid"  # signed
        assert call(base, f"/v1/jobs/{text_gen['job_id']}")["params"]["max_tokens"] == 24
        page.select_option("#model-select", run.id)

        # Jobs: each lane's queue; train a tiny model from the form (a 6 s budget), watch its progress bar move
        # while it runs (progress events, not only the final status), see its loss curve.
        page.click("#tab-jobs")
        page.wait_for_selector("#lanes [data-testid=lane-interactive]")
        assert page.get_attribute("#lanes [data-testid=lane-batch]", "data-workers") == "1"
        page.select_option("#train-family", "vae")
        page.select_option("#train-data", "digits")
        page.fill("#train-steps", "")
        page.fill("#train-budget", "6")
        page.click("#train-form details summary")
        page.fill("#train-overrides", "\n".join(tiny("vae")))
        page.evaluate(
            """() => {
                window.__bar = [];
                const bar = document.querySelector("#job-detail-progress");
                new MutationObserver(() => window.__bar.push({
                    value: bar.hasAttribute("value") ? bar.value / bar.max : null,
                    status: document.querySelector("#job-detail-status").dataset.status,
                    text: document.querySelector("#job-detail-progress-text").textContent,
                })).observe(bar, {attributes: true});
            }"""
        )
        page.click("#train-submit")
        page.wait_for_selector("#job-detail-status[data-status=succeeded]", timeout=120_000)
        seen = page.evaluate("window.__bar")
        moving = [s for s in seen if s["status"] == "running" and s["value"] is not None and 0 < s["value"] < 1]
        assert len({round(s["value"], 3) for s in moving}) >= 2, seen  # it moved while running, not only at the end
        assert any("training" in s["text"] and " s of 6 s" in s["text"] for s in moving), seen
        page.wait_for_function("Number(document.querySelector('#loss-chart').dataset.points) > 0")
        assert "loss" in page.inner_text("#loss-legend")
        job_id = page.get_attribute("#job-detail", "data-job-id")
        job = call(base, f"/v1/jobs/{job_id}")
        assert job["kind"] == "train" and job["status"] == "succeeded"
        assert page.locator(f"#jobs-body [data-testid=job-row][data-id='{job_id}']").count() == 1
        # The serve's worker in the workers table: its machine, device and a fresh heartbeat.
        worker = page.wait_for_selector(f"#workers-body [data-testid=worker-row][data-host='{socket.gethostname()}']")
        assert worker.get_attribute("data-status") in ("idle", "busy") and " s ago" in worker.inner_text()
        assert worker.query_selector("td:nth-child(2)").inner_text() not in ("", "—")  # the device
        # The new run shows up among the models.
        page.wait_for_selector(f"#model-select option[value='{job['result']['run_id']}']", state="attached")
        screenshot(page, "jobs")

        page.click("#tab-gallery")
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, "gallery")
        # No emoji anywhere in the page (they render as empty boxes without an emoji font), and no horizontal
        # overflow at a wide and a narrow width, on every tab.
        pattern = r"/[\u{1F000}-\u{1FAFF}\u{26A0}\u{2705}\u{274C}\u{1F512}]/gu"  # emoji; not text symbols (★)
        emoji = page.evaluate(f"() => (document.body.innerText.match({pattern}) || [])")
        assert emoji == [], emoji
        for width in (1400, 800):
            page.set_viewport_size({"width": width, "height": 1000})
            for tab in ("gallery", "ab", "chat", "jobs", "verify"):
                page.click(f"#tab-{tab}")
                over = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert over <= 0, (width, tab, over)
            screenshot(page, f"page_{width}")
        assert banner(page) == "", banner(page)
        assert not problems, problems
        page.close()

    # With a token: the page asks for it on the first 401, then works (images too, via Authorization).
    with serve(tmp_path, token="studio-test-token-0123") as base:
        page, problems = open_page(browser, base)
        page.wait_for_selector("#token-dialog[open]")
        assert "token" in page.inner_text("#token-reason").lower()
        page.fill("#token-input", "studio-test-token-0123")
        page.click("#token-save")
        page.wait_for_selector(f"#model-select option[value='{run.id}']", state="attached")
        img = page.locator(f"#gallery [data-testid=gen-card][data-id='{gen_id}'] [data-testid=gen-image]")
        img.wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        assert page.evaluate("localStorage.getItem('genloop.token')") == "studio-test-token-0123"
        assert not page.is_visible("#error-banner"), banner(page)
        page.close()
