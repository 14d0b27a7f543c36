"""The studio's Runs tab in a real headless Chromium against a real `genloop serve`: the runs listed with family,
data, steps, status and headline metric beside its floor; one evaluated through the page (an evaluate job, its
progress shown in the row); its report opened in the page (a sandboxed frame); two compared (the table and the
plot), and two scored by different reference nets compared unranked; one deleted after a confirmation (cancel
first: nothing goes); no horizontal overflow at 1400 and 390 px; a screenshot of the tab as runs.png in
$GENLOOP_SCREENSHOTS (else /tmp); with a token, the report's frame loads through the session cookie.

Same needs as tests/test_studio_browser.py (Playwright for Python and Debian's chromium), whose helpers it uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import tiny
from studio_support import screenshot
from test_studio_browser import TINY_GPT, banner, browser, call, open_page, serve  # noqa: F401 (browser: fixture)

import genloop
from genloop.runs import RunStore

TOKEN = "runs-browser-token-0123"


def row(page, run_id: str):
    return page.locator(f"[data-testid=run-row][data-id='{run_id}']")


def test_runs_tab_evaluates_reports_compares_and_deletes(tmp_path: Path, browser) -> None:  # noqa: F811
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log.\n" * 40, encoding="utf-8")
    first = genloop.train("gpt", data=str(corpus), overrides=TINY_GPT, steps=3, progress=False)
    second = genloop.train("gpt", data=str(corpus), overrides=TINY_GPT, steps=4, progress=False)
    genloop.evaluate(second.id, n=10)
    doomed = genloop.train("dcgan", data="digits", overrides=tiny("dcgan"), steps=1, progress=False)
    other = genloop.train("dcgan", data="digits", overrides=tiny("dcgan"), steps=1, progress=False)

    with serve(tmp_path) as base:
        page, problems = open_page(browser, base)
        page.click("#tab-runs")
        page.wait_for_function("document.querySelectorAll('[data-testid=run-row]').length === 4")
        assert row(page, first.id).locator("[data-testid=run-steps]").inner_text() == "3 / 3"
        assert row(page, first.id).locator("[data-testid=run-status]").text_content() == "finished"
        assert "not evaluated" in row(page, first.id).inner_text()
        assert "gpt · " in row(page, first.id).inner_text() and "dcgan · digits" in row(page, doomed.id).inner_text()
        listed = {r["id"]: r for r in call(base, "/v1/runs")["runs"]}
        h = listed[second.id]["headline"]
        shown = row(page, second.id).locator("[data-testid=run-headline]")
        assert shown.get_attribute("data-key") == h["key"] and h["text"] in shown.inner_text()
        assert f"floor {h['floor_text']}" in shown.inner_text()

        # Evaluate through the page: an evaluate job whose progress shows in the row, then the headline.
        page.evaluate(
            """() => { window.__sawEval = false; new MutationObserver(() => {
                if (document.querySelector('[data-testid=run-eval]')) window.__sawEval = true;
            }).observe(document.querySelector('#runs-body'), {childList: true, subtree: true}); }"""
        )
        page.fill("#runs-eval-n", "10")
        row(page, first.id).locator("[data-testid=run-evaluate]").click()
        row(page, first.id).locator("[data-testid=run-headline]").wait_for()
        assert page.evaluate("window.__sawEval") is True
        [job] = [j for j in call(base, "/v1/jobs?kind=evaluate")["jobs"] if j["params"]["run_id"] == first.id]
        assert job["status"] == "succeeded" and job["params"]["n"] == 10
        h = {r["id"]: r for r in call(base, "/v1/runs")["runs"]}[first.id]["headline"]
        assert h["text"] in row(page, first.id).locator("[data-testid=run-headline]").inner_text()
        assert banner(page) == "", banner(page)

        # Its report, built on demand and shown in a sandboxed frame of the page.
        row(page, first.id).locator("[data-testid=run-report]").click()
        page.wait_for_selector("#runs-report-dialog[open][data-state=shown]")
        assert page.get_attribute("#runs-report-frame", "sandbox") == ""
        frame = page.frame_locator("#runs-report-frame")
        frame.locator("body").wait_for()
        assert first.id in frame.locator("body").inner_text()
        assert (tmp_path / "runs" / first.id / "report.html").is_file()
        page.click("[data-testid=runs-report-close]")
        assert not page.is_visible("#runs-report-dialog")

        # Compare the two evaluated runs: the table (best per metric marked) and the plot against the floors.
        assert page.is_disabled("#runs-compare")
        row(page, first.id).locator("[data-testid=run-pick]").check()
        row(page, second.id).locator("[data-testid=run-pick]").check()
        page.click("#runs-compare")
        page.wait_for_function("document.querySelectorAll('[data-testid=compare-row]').length === 2")
        assert page.locator("[data-testid=plot-row]").count() == 2
        assert page.locator("[data-testid=plot-floor]").count() == 2
        assert page.locator("#runs-compare-body td[data-best=true]").count() >= 1
        assert not page.is_visible("#runs-unranked")  # one family, no reference net: ranked
        compared = call(base, f"/v1/runs/compare?ids={first.id},{second.id}")
        assert [c["title"] for c in compared["columns"]] == page.eval_on_selector_all(
            "#runs-compare-head th", "ths => ths.map(t => t.textContent)"
        )

        for width in (1400, 390):
            page.set_viewport_size({"width": width, "height": 1000})
            over = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert over <= 0, (width, over)
        screenshot(page, "runs_390", full_page=True)
        page.set_viewport_size({"width": 1400, "height": 1000})
        screenshot(page, "runs", full_page=True)

        # Runs scored by different reference nets: compared side by side, ranked against nothing, and said so.
        # (Written evaluation files: a real image evaluation trains a reference net, tens of seconds.)
        for run, net in ((doomed, "ref-digits-16px"), (other, "ref-digits-32px")):
            (run.dir / "eval").mkdir(exist_ok=True)
            metrics = {"step": 1, "fid": 9.0, "fid_floor": 3.0, "feature_net": {"id": net}}
            (run.dir / "eval" / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
        page.click("#runs-refresh")
        row(page, doomed.id).locator("[data-testid=run-headline]").wait_for()
        row(page, first.id).locator("[data-testid=run-pick]").uncheck()
        row(page, second.id).locator("[data-testid=run-pick]").uncheck()
        row(page, doomed.id).locator("[data-testid=run-pick]").check()
        row(page, other.id).locator("[data-testid=run-pick]").check()
        page.click("#runs-compare")
        page.wait_for_selector("#runs-unranked:not([hidden])")
        assert "different reference networks" in page.inner_text("#runs-unranked")
        assert page.locator("#runs-compare-body td[data-best=true]").count() == 0
        assert {r.get_attribute("data-id") for r in page.locator("[data-testid=compare-row]").all()} == {
            doomed.id,
            other.id,
        }

        # A run in training can be neither evaluated nor deleted, and the tab follows it until it ends (no click).
        runs = RunStore(tmp_path / "runs")
        runs.update(runs.get(other.id), status="running", pid=os.getpid())
        page.click("#runs-refresh")
        page.wait_for_selector(f"[data-testid=run-row][data-id='{other.id}'] [data-testid=run-delete][disabled]")
        assert row(page, other.id).locator("[data-testid=run-evaluate]").is_disabled()
        runs.update(runs.get(other.id), status="finished")
        page.wait_for_selector(f"[data-testid=run-row][data-id='{other.id}'] [data-testid=run-delete]:not([disabled])")

        # Delete asks first: Cancel keeps the run, Delete removes it from the list, the disk and the models.
        assert page.locator(f"#model-select option[value='{doomed.id}']").count() == 1
        row(page, doomed.id).locator("[data-testid=run-delete]").click()
        page.wait_for_selector("#runs-delete-dialog[open]")
        assert doomed.id in page.inner_text("[data-testid=runs-delete-what]")
        page.click("[data-testid=runs-delete-cancel]")
        assert not page.is_visible("#runs-delete-dialog") and (tmp_path / "runs" / doomed.id).is_dir()
        assert row(page, doomed.id).count() == 1
        row(page, doomed.id).locator("[data-testid=run-delete]").click()
        page.click("[data-testid=runs-delete-confirm]")
        page.wait_for_function("document.querySelectorAll('[data-testid=run-row]').length === 3")
        page.wait_for_selector(f"#model-select option[value='{doomed.id}']", state="detached")
        assert not (tmp_path / "runs" / doomed.id).exists()
        assert banner(page) == "", banner(page)
        assert not problems, problems
        page.close()

    # With a token the frame has no header to send: the session cookie the page opens lets it load the report.
    with serve(tmp_path, token=TOKEN) as base:
        page, _ = open_page(browser, base)
        page.wait_for_selector("#token-dialog[open]")
        page.fill("#token-input", TOKEN)
        page.click("#token-save")
        page.wait_for_selector(f"#model-select option[value='{first.id}']", state="attached")
        page.click("#tab-runs")
        row(page, first.id).locator("[data-testid=run-report]").click()
        page.wait_for_selector("#runs-report-dialog[open][data-state=shown]")
        assert page.get_attribute("#runs-report-frame", "src").startswith(f"/v1/runs/{first.id}/report?")
        assert first.id in page.frame_locator("#runs-report-frame").locator("body").inner_text()
        assert banner(page) == "", banner(page)
        page.close()
