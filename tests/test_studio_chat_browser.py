"""The studio's Chat tab in a real headless Chromium against a real `genloop serve`: send a message and see the
reply stream in, rate it (a rating of its stored generation), ask for two replies and keep one (a preference,
which exports as a TRL conversational pair), reset; no emoji, no horizontal overflow at two widths.

Same needs as tests/test_studio_browser.py (Playwright for Python and Debian's chromium), whose helpers it uses.
"""

from __future__ import annotations

import json
from pathlib import Path

from studio_support import screenshot
from test_studio_browser import TINY_GPT, banner, browser, call, open_page, serve  # noqa: F401 (browser: fixture)

import genloop
from genloop.feedback.export import export
from genloop.feedback.store import FeedbackStore


def test_chat_tab_streams_rates_and_compares(tmp_path: Path, browser) -> None:  # noqa: F811
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("user: hi\nassistant: hello there\n\n" * 40, encoding="utf-8")
    run = genloop.train("gpt", data=str(corpus), overrides=TINY_GPT, steps=3, progress=False)

    with serve(tmp_path) as base:
        page, problems = open_page(browser, base)
        page.click("#tab-chat")
        page.wait_for_selector(f"#chat-model option[value='{run.id}']", state="attached")
        page.select_option("#chat-model", run.id)
        page.fill("#chat-max-tokens", "12")
        page.fill("#chat-temperature", "1")
        page.fill("#chat-system", "Be brief.")

        # Send: the user's turn shows at once, the reply streams in and then carries its thumbs.
        page.fill("#chat-input", "hi")
        page.click("#chat-send")
        page.wait_for_selector("[data-testid=chat-turn-assistant] [data-testid=chat-feedback]")
        assert page.inner_text("[data-testid=chat-turn-user] .chat-text") == "hi"
        reply = page.locator("[data-testid=chat-turn-assistant]").first
        gid = reply.get_attribute("data-generation-id")
        gen = call(base, f"/v1/generations/{gid}")
        assert reply.locator(".chat-text").inner_text() in (gen["text"], "(empty reply)")
        assert gen["recipe"]["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ]
        assert banner(page) == "", banner(page)

        # Rate it: the thumbs rate that generation.
        reply.locator("[data-testid=chat-thumb-up]").click()
        page.wait_for_selector("[data-testid=chat-thumb-up][aria-pressed=true]")
        assert call(base, f"/v1/generations/{gid}")["feedback"]["up"] == 1

        # A/B: two replies to the same conversation; keeping B records B over A.
        page.fill("#chat-input", "and you?")
        page.click("#chat-ab")
        page.wait_for_selector("[data-testid=chat-keep-b]:not([disabled])")
        page.click("[data-testid=chat-keep-b]")
        page.wait_for_selector("[data-testid=chat-kept]")
        [pref] = call(base, "/v1/preferences")["preferences"]
        a, b = call(base, f"/v1/generations/{pref['chosen_id']}"), call(base, f"/v1/generations/{pref['rejected_id']}")
        assert a["recipe"]["messages"] == b["recipe"]["messages"] and a["id"] != b["id"]
        assert a["recipe"]["messages"][-1] == {"role": "user", "content": "and you?"}
        assert page.inner_text("[data-testid=chat-ab-b] .chat-text") in (a["text"], "(empty reply)")

        # The choice exports as TRL's conversational preference pair.
        store = FeedbackStore(runs=tmp_path / "runs")
        export(store, tmp_path / "pairs.jsonl", "trl-pairs")
        [row] = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
        assert row["prompt"] == a["recipe"]["messages"]
        assert row["chosen"] == [{"role": "assistant", "content": a["text"]}]

        pattern = r"/[\u{1F000}-\u{1FAFF}\u{26A0}\u{2705}\u{274C}\u{1F512}]/gu"
        assert page.evaluate(f"() => (document.body.innerText.match({pattern}) || [])") == []
        for width in (1400, 800):
            page.set_viewport_size({"width": width, "height": 1000})
            over = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert over <= 0, (width, over)
        screenshot(page, "chat")

        # Reset empties the conversation.
        page.click("#chat-reset")
        assert page.locator("#chat-log > li").count() == 0 and page.is_visible("#chat-empty")
        assert not problems, problems
        page.close()
