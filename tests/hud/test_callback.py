"""HudCallback: a run's nodes, spend and candidates reach the HUD, in this process and from
another; a HUD that is slow or gone never slows or breaks the run; no secret ever reaches it."""

from __future__ import annotations

import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

import dspy
import httpx
import pytest
from dspy.utils.dummies import DummyLM

import dspy_pylon as pylon
from dspy_pylon.hud.events import EventKind, EventLog
from dspy_pylon.hud.server import HudServer
from dspy_pylon.local.embedded import EmbeddedLlama, free_port
from dspy_pylon.testing import LocalSwarm
from tests.helpers import WholeAnswerAdapter
from tests.hud.test_server import read_events
from tests.trace.test_recorder import Two, _dummy, _examples, compile_small


def _kinds(log: EventLog) -> list[tuple[EventKind, dict[str, Any]]]:
    events, missed = log.since(0)
    assert missed == 0
    return [(e.kind, dict(e.data)) for e in events]


def test_in_process_every_node_starts_then_ends_under_its_parent() -> None:
    log = EventLog()
    hud = pylon.HudCallback(log=log)
    with dspy.context(lm=_dummy(), callbacks=[hud]):
        dspy.Evaluate(devset=_examples(4), metric=lambda e, p, t=None: True, num_threads=4)(Two())
    events = _kinds(log)
    started = [d for k, d in events if k is EventKind.NODE_START]
    ended = [d for k, d in events if k is EventKind.NODE_END]
    assert len(started) == len(ended) > 4 * 8
    seen: set[str] = set()
    for kind, data in events:
        if kind is EventKind.NODE_START:
            assert data["parent_id"] is None or data["parent_id"] in seen  # the page can always place it
            seen.add(data["node_id"])
    assert {d["type"] for d in ended} >= {"evaluate", "module", "predictor", "lm", "adapter_format"}
    assert [k for k, _ in events].count(EventKind.RUN_COMPLETE) == 1
    assert len(hud.graph) == 0  # told, then forgotten


def test_a_paid_swarm_run_shows_route_cost_and_the_budget(
    tiny_server: EmbeddedLlama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog()
    with LocalSwarm(tmp_path, providers=1, price_msats=3_000, backend_url=tiny_server.url) as swarm:
        lm = swarm.lm(bid_msats=5_000, budget_sats=20, max_tokens=4, cache=False)
        with dspy.context(lm=lm, adapter=WholeAnswerAdapter(), callbacks=[pylon.HudCallback(log=log)]):
            dspy.Predict("question -> answer")(question="paid")
            dspy.Predict("question -> answer")(question="paid again")
    events = _kinds(log)
    [lm_end, _] = [d for k, d in events if k is EventKind.NODE_END and d["type"] == "lm"]
    assert lm_end["route"]["venue"] == "swarm" and len(lm_end["route"]["job_id"]) == 64
    assert lm_end["usage"]["cost_msats"] == 3_000
    budgets = [d for k, d in events if k is EventKind.BUDGET]
    assert {k: v for k, v in budgets[-1].items() if k != "key"} == {
        "model": "pylon:swarm",
        "spent_msats": 6_000,
        "limit_msats": 20_000,
    }
    assert budgets[-1]["key"].startswith("pylon:swarm#")  # one LM's budget, told apart from another's


def test_candidates_of_a_compile_reach_the_chart_and_the_lineage() -> None:
    log = EventLog()
    with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[pylon.HudCallback(log=log)]):
        _, manifest = compile_small()
    candidates = [d for k, d in _kinds(log) if k is EventKind.CANDIDATE]
    assert candidates and candidates[-1]["candidate_id"] == manifest.compiled_id
    assert all(isinstance(v, float) for c in candidates for v in c["metrics"].values())


def test_from_another_process_events_arrive_through_the_url() -> None:
    with HudServer(token="t0ken") as server:
        hud = pylon.HudCallback(server.url)
        with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[hud]):
            dspy.Predict("question -> answer")(question="q1")
        assert hud.flush(10)
        deadline = time.monotonic() + 10
        while not any(e.kind is EventKind.RUN_COMPLETE for e in server.log.since(0)[0]):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        hud.close()
        assert hud.dropped == 0
        kinds = [e.kind for e in server.log.since(0)[0]]
        assert kinds.count(EventKind.NODE_START) == kinds.count(EventKind.NODE_END) >= 4


def test_a_hud_that_is_gone_neither_slows_nor_breaks_the_run(caplog: pytest.LogCaptureFixture) -> None:
    hud = pylon.HudCallback(f"http://127.0.0.1:{free_port()}/")
    program = dspy.Predict("question -> answer")
    with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[hud]):
        for i in range(5):
            assert program(question=f"q{i}").answer.endswith(str(i))
    hud.flush(10)
    hud.close()
    assert hud.dropped > 0  # counted, and said once
    assert len([r for r in caplog.records if "not taking events" in r.getMessage()]) == 1


def test_a_full_queue_drops_and_counts_never_waits() -> None:
    # A HUD that takes the connection and never answers: the sender waits on it, the run does not.
    with socket.socket() as stuck:
        stuck.bind(("127.0.0.1", 0))
        stuck.listen(8)
        hud = pylon.HudCallback(f"http://127.0.0.1:{stuck.getsockname()[1]}/", max_queue=10)
        began = time.perf_counter()
        with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[hud]):
            for i in range(10):
                dspy.Predict("question -> answer")(question=f"q{i}")
        assert time.perf_counter() - began < 3  # the sender's 5 s timeout is never the run's
        assert hud.dropped >= 80  # of 110 events: all but the first (being sent) and the ten that fit
        hud.close(timeout=1)


def test_the_url_must_be_a_hud_url_and_one_target_given() -> None:
    with pytest.raises(pylon.ConfigError):
        pylon.HudCallback("ftp://somewhere")
    with pytest.raises(pylon.ConfigError):
        pylon.HudCallback()
    with pytest.raises(pylon.ConfigError):
        pylon.HudCallback("http://127.0.0.1:1/", log=EventLog())


def test_pylon_hud_open_records_every_run_until_closed() -> None:
    with pylon.hud.open(announce=False) as hud:
        assert urllib.parse.urlsplit(hud.url).hostname == "127.0.0.1"
        with dspy.context(lm=DummyLM([{"answer": "a"}] * 4), adapter=WholeAnswerAdapter()):
            dspy.Predict("question -> answer")(question="q")
        events = read_events(f"{hud.server.base_url}/events", 2)
        assert events[0]["data"]["kind"] == "node_start"  # type: ignore[index]
    assert hud.callback not in (dspy.settings.get("callbacks") or [])


def test_no_secret_reaches_the_stream_or_the_page(
    tiny_server: EmbeddedLlama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnemonic = pylon.generate_mnemonic()
    keys = pylon.keys_from_mnemonic(mnemonic)
    with LocalSwarm(tmp_path, providers=1, price_msats=1_000, backend_url=tiny_server.url) as swarm:
        nwc_uri = swarm.customer_uri()
        nwc_secret = urllib.parse.parse_qs(urllib.parse.urlsplit(nwc_uri).query)["secret"][0]
        config = pylon.PylonConfig(
            venue=pylon.Swarm(relays=(swarm.url,), bid_msats=2_000, auto_pay=True), timeout=30, budget_sats=10
        )
        lm = pylon.PylonLM.from_mnemonic(mnemonic, config, nwc_uri=nwc_uri, home=swarm.home, cache=False, max_tokens=4)
        with HudServer() as server:
            hud = pylon.HudCallback(log=server.log, keep_content=True)  # content kept: still no secret
            with dspy.context(lm=lm, adapter=WholeAnswerAdapter(), callbacks=[hud]):
                dspy.Predict("question -> answer")(question="what is secret?")
            stream = read_events(f"{server.base_url}/events", server.log.last_id)
            page = httpx.get(server.url, timeout=10).text
    text = str(stream) + page
    assert any(e["data"]["kind"] == "budget" for e in stream)  # type: ignore[index]
    secret_key = keys.secret_key()
    for secret in (mnemonic, " ".join(mnemonic.split()[:3]), secret_key.to_hex(), secret_key.to_bech32(), nwc_secret):
        assert secret not in text, secret


def test_a_hud_that_is_down_costs_an_attempt_per_back_off_not_a_busy_loop() -> None:
    from dspy_pylon.hud import callback as hud_callback

    hud = pylon.HudCallback(f"http://127.0.0.1:{free_port()}/")
    sender = hud._sender
    assert sender is not None
    with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[hud]):
        dspy.Predict("question -> answer")(question="q1")
    assert not hud.flush(5)  # nothing reached it, and flush says so
    failures, began = sender.failures, time.process_time()
    with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[hud]):
        for i in range(20):
            dspy.Predict("question -> answer")(question=f"q{i}")
            time.sleep(0.05)
    time.sleep(0.5)
    assert sender.failures - failures <= 1.5 / hud_callback.SEND_EVERY_SECONDS  # backing off, not spinning
    assert time.process_time() - began < 1.0
    hud.close(timeout=1)


def test_a_candidate_reported_after_its_compile_stays_under_it_and_is_no_run() -> None:
    log = EventLog()
    with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[pylon.HudCallback(log=log)]):
        compile_small()
    events = _kinds(log)
    compiles = [d for k, d in events if k is EventKind.NODE_END and d["type"] == "compile"]
    candidates = [d for k, d in events if k is EventKind.NODE_START and d["type"] == "candidate"]
    assert candidates and all(c["parent_id"] == compiles[0]["node_id"] for c in candidates)
    roots = [d for k, d in events if k is EventKind.NODE_START and d["parent_id"] is None]
    runs = [k for k, _ in events].count(EventKind.RUN_COMPLETE)
    assert [r["type"] for r in roots] == ["compile", "evaluate"] and runs == 2  # the candidate is no run
