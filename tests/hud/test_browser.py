"""The HUD in a real browser: headless Chromium (Debian's, driven by playwright) loads the page
while a real run goes — local llama.cpp and a paid swarm provider, then a compile — and the
rendered tree, totals, budget gauge, candidate chart and lineage update as it runs; a reload
catches up from the event ids. Screenshots go to ``test-artifacts/hud/``."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy
import pytest

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama
from dspy_pylon.testing import LocalSwarm
from tests.helpers import WholeAnswerAdapter
from tests.trace.test_phoenix import LocalThenSwarm
from tests.trace.test_recorder import _dummy, compile_small

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "hud"
PRICE_MSATS = 3_000
EXAMPLES = 6
COMPILE_CALLS = 3  # compile_small(examples=3) scores the compiled program once on each example
LM_CALLS = 2 * EXAMPLES + COMPILE_CALLS


@pytest.fixture
def browser_page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: scripts/test.sh installs it (apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1500, "height": 1000})
        finally:
            browser.close()


def _number(page: Any, selector: str) -> int:
    return int(page.text_content(selector) or "0")


def test_the_page_follows_a_real_run_and_catches_up_after_a_reload(
    browser_page: Any, tiny_server: EmbeddedLlama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMACPP_URL", tiny_server.url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    with (
        LocalSwarm(tmp_path, providers=1, price_msats=PRICE_MSATS, backend_url=tiny_server.url) as swarm,
        pylon.hud.open(announce=False) as hud,
    ):
        page.goto(hud.url)
        page.wait_for_selector("#status[data-state=live]", timeout=15_000)
        assert _number(page, "#total-nodes") == 0
        local = pylon.LM("pylon:local:llamacpp", max_tokens=4, temperature=0.0, cache=False)
        remote = swarm.lm(bid_msats=5_000, budget_sats=50, max_tokens=4, cache=False)
        failures: list[BaseException] = []

        def run() -> None:
            try:
                with dspy.context(adapter=WholeAnswerAdapter()):
                    devset = [dspy.Example(question=f"question {i}").with_inputs("question") for i in range(EXAMPLES)]
                    dspy.Evaluate(devset=devset, metric=lambda e, p, t=None: True, num_threads=2)(
                        LocalThenSwarm(local, remote)
                    )
                with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter()):
                    compile_small(examples=COMPILE_CALLS)
            except BaseException as exc:  # reported by the test thread
                failures.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        # Live: the tree grows while the run is still going.
        page.wait_for_function("Number(document.querySelector('#total-lm').textContent) >= 1", timeout=30_000)
        running = worker.is_alive()
        page.screenshot(path=str(ARTIFACTS / "during-run.png"))
        worker.join(120)
        assert not worker.is_alive() and not failures, failures
        assert running, "the run ended before the page showed its first LM call"
        page.wait_for_function(
            f"Number(document.querySelector('#total-lm').textContent) >= {LM_CALLS}"
            " && Number(document.querySelector('#chart-text').dataset.count) >= 1",
            timeout=30_000,
        )
        page.wait_for_timeout(300)  # the last animation frame
        page.screenshot(path=str(ARTIFACTS / "after-run.png"), full_page=True)

        totals = {name: _number(page, f"#total-{name}") for name in ("runs", "nodes", "lm", "tokens", "cost", "errors")}
        assert totals["lm"] == LM_CALLS and totals["cost"] == EXAMPLES * PRICE_MSATS and totals["errors"] == 0
        assert totals["tokens"] > 0 and totals["runs"] >= 2
        # The tree: every LM call under its predictor, each with its route; all finished.
        assert page.locator("#tree li[data-type=lm]").count() == LM_CALLS
        assert page.locator("#tree li[data-status=running]").count() == 0
        swarm_rows = page.locator("#tree li[data-type=lm] .meta", has_text="swarm")
        assert swarm_rows.count() == EXAMPLES and f"{PRICE_MSATS} msats" in (swarm_rows.first.text_content() or "")
        assert page.locator("#tree li[data-type=predictor] > ul > li[data-type=lm]").count() == LM_CALLS
        # The gauge: what the paid LM spent against its 50-sat budget.
        gauge = page.locator("#gauge-text")
        assert gauge.get_attribute("data-spent") == str(EXAMPLES * PRICE_MSATS)
        assert gauge.get_attribute("data-limit") == "50000"
        assert float(page.locator("#gauge-bar").get_attribute("width") or 0) > 0
        # The chart and the lineage: the compile's candidates.
        assert page.locator("#chart-svg circle.point").count() >= 1
        assert page.locator("#lineage li.candidate").count() >= 1

        # A reload starts from nothing and catches up from the stream's ids.
        page.reload()
        page.wait_for_function(
            f"Number(document.querySelector('#total-nodes').textContent) === {totals['nodes']}", timeout=30_000
        )
        assert {name: _number(page, f"#total-{name}") for name in totals} == totals
        page.screenshot(path=str(ARTIFACTS / "after-reload.png"), full_page=True)
    assert not errors, errors
