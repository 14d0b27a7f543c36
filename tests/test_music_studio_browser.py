"""Music in GenLoop Studio in a real headless Chromium: a music run's controls come from its descriptor, a
generate job's pieces appear as cards with a piano roll and an audio player, and A/B works on them.

Needs Playwright for Python and Debian's chromium (skipped otherwise, like tests/test_studio_browser.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from music_support import two_track_score
from studio_support import screenshot
from test_music_loop import TINY_MUSIC, music_folder
from test_studio_browser import banner, browser, call, open_page, serve  # noqa: F401 - browser is a fixture

import genloop


@pytest.mark.slow
def test_music_in_the_studio_page(tmp_path: Path, browser) -> None:  # noqa: F811
    run = genloop.train(
        "music-gpt", data=str(music_folder(tmp_path / "data")), overrides=TINY_MUSIC, steps=3, progress=False
    )
    with serve(tmp_path) as base:
        page, problems = open_page(browser, base)
        page.select_option("#model-select", run.id)
        assert page.is_visible("[data-testid=descriptor-controls]")
        assert not page.is_visible("[data-testid=image-controls]") and not page.is_visible(
            "[data-testid=text-controls]"
        )
        assert page.text_content("#descriptor-legend") == "Music settings"
        page.fill("#ctl-n", "2")
        page.fill("#ctl-bars", "2")
        page.fill("#ctl-seed", "4")
        page.click("#generate-button")
        page.wait_for_selector("#gen-job-status[data-status=succeeded]")
        page.wait_for_function(
            "document.querySelectorAll('#latest-grid [data-testid=gen-card][data-modality=music]').length === 2"
        )
        ids = page.eval_on_selector_all("#latest-grid [data-testid=gen-card]", "cs => cs.map(c => c.dataset.id)")
        g = call(base, f"/v1/generations/{ids[0]}")
        assert g["modality"] == "music" and g["recipe"]["bars"] == 2 and g["recipe"]["seed"] in (4, 5)
        card = page.locator(f"#gallery [data-testid=gen-card][data-id='{ids[0]}']")
        roll = card.locator("[data-testid=gen-roll]")
        roll.wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=roll.element_handle())
        audio = card.locator("[data-testid=gen-audio]")
        assert audio.get_attribute("src").endswith(f"/v1/generations/{ids[0]}/audio")
        kind = page.evaluate(
            "a => fetch(a.src).then(r => r.ok && r.headers.get('content-type'))", audio.element_handle()
        )
        assert kind == "audio/wav"

        page.locator(f"#gallery [data-testid=gen-card][data-id='{ids[0]}'] [data-testid=ab-pick]").check()
        page.locator(f"#gallery [data-testid=gen-card][data-id='{ids[1]}'] [data-testid=ab-pick]").check()
        page.click("#ab-compare-selected")
        page.wait_for_selector("#ab-arena:not([hidden])")
        assert page.locator("#ab-a [data-testid=gen-audio]").count() == 1
        page.click("#ab-choose-a")
        page.wait_for_selector("#ab-result:not([hidden])")
        prefs = call(base, "/v1/preferences")["preferences"]
        assert [(p["chosen_id"], p["rejected_id"]) for p in prefs] == [(ids[0], ids[1])]

        # Continue a MIDI file: the page uploads it, the job names the upload, the recipe says which.
        theme = tmp_path / "theme.mid"
        theme.write_bytes(bytes(two_track_score().dumps_midi()))
        page.set_input_files("#ctl-prompt_midi", str(theme))
        page.fill("#ctl-n", "1")
        page.fill("#ctl-bars", "3")
        page.click("#generate-button")
        deadline = time.monotonic() + 60
        while call(base, f"/v1/generations?run_id={run.id}")["total"] < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        newest = call(base, f"/v1/generations?run_id={run.id}&limit=1")["generations"][0]
        assert newest["recipe"]["prompt_midi"].startswith("upload:") and newest["recipe"]["prompt_bars"] == 2
        screenshot(page, "music")
        assert banner(page) == "" and not problems, (banner(page), problems)
