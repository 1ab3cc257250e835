"""The HUD server over real HTTP: the page, the resumable event stream, the token, ingestion."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dspy
import httpx
import pytest
from dspy.utils.dummies import DummyLM

import dspy_pylon as pylon
from dspy_pylon.hud.events import EventKind
from dspy_pylon.hud.server import HudServer, is_loopback


@pytest.fixture
def server() -> Iterator[HudServer]:
    with HudServer() as running:
        yield running


def read_events(url: str, count: int, headers: dict[str, str] | None = None) -> list[dict[str, object]]:
    """The first ``count`` events of the SSE stream at ``url`` (each with its SSE id)."""
    found: list[dict[str, object]] = []
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, object] = {}
        for line in response.iter_lines():
            if line.startswith("id:"):
                current["sse_id"] = int(line[3:].strip())
            elif line.startswith("event:"):
                current["event"] = line[6:].strip()
            elif line.startswith("data:"):
                current["data"] = json.loads(line[5:].strip())
            elif not line and current:
                found.append(current)
                current = {}
                if len(found) == count:
                    return found
    return found


def test_the_page_and_the_stream_resume_where_the_page_left(server: HudServer) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}/" and server.token is None
    page = httpx.get(server.url, timeout=10)
    assert page.status_code == 200 and "pylon HUD" in page.text and "EventSource" in page.text
    for i in range(5):
        server.log.append(EventKind.RUN_COMPLETE, {"nodes": i})
    events = read_events(f"{server.base_url}/events", 5)
    assert [e["sse_id"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["data"] == {"id": 1, "kind": "run_complete", "data": {"nodes": 0}}
    # A reconnect with Last-Event-ID (what a browser sends) gets only what came after.
    later = read_events(f"{server.base_url}/events", 2, headers={"Last-Event-ID": "3"})
    assert [e["sse_id"] for e in later] == [4, 5]
    assert [e["sse_id"] for e in read_events(f"{server.base_url}/events?since=4", 1)] == [5]
    assert httpx.get(f"{server.base_url}/events?since=x", timeout=10).status_code == 400


def test_a_page_too_far_behind_is_told_how_many_it_missed() -> None:
    with HudServer(log=pylon.hud.EventLog(capacity=3)) as small:
        for i in range(6):
            small.log.append(EventKind.RUN_COMPLETE, {"nodes": i})
        events = read_events(f"{small.base_url}/events", 4)
    assert events[0] == {"event": "missed", "data": {"count": 3}}
    assert [e["sse_id"] for e in events[1:]] == [4, 5, 6]


def test_a_token_guards_every_route() -> None:
    with HudServer(token="let-me-in") as guarded:
        assert guarded.url.endswith("/?token=let-me-in")
        for path in ("/", "/events"):
            assert httpx.get(guarded.base_url + path, timeout=10).status_code == 403
            assert httpx.get(guarded.base_url + path + "?token=wrong", timeout=10).status_code == 403
        assert httpx.post(guarded.base_url + "/ingest", json={"events": []}, timeout=10).status_code == 403
        assert httpx.get(guarded.url, timeout=10).status_code == 200
        authorized = {"Authorization": "Bearer let-me-in"}
        assert httpx.post(guarded.base_url + "/ingest", json={"events": []}, headers=authorized).status_code == 200


def test_off_loopback_a_token_is_made_and_an_empty_one_refused() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    open_to_all = HudServer("0.0.0.0")
    assert open_to_all.token is not None and len(open_to_all.token) >= 24
    with pytest.raises(pylon.ConfigError):
        HudServer(token="")


def test_ingest_takes_batches_and_refuses_what_it_cannot_read(server: HudServer) -> None:
    ingest = f"{server.base_url}/ingest"
    batch = {"events": [{"kind": "run_complete", "data": {"nodes": 1}}], "dropped": 4}
    answer = httpx.post(ingest, json=batch, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"accepted": 1, "last_id": 2}
    events, _ = server.log.since(0)
    assert [(e.kind, dict(e.data)) for e in events] == [
        (EventKind.RUN_COMPLETE, {"nodes": 1}),
        (EventKind.DROPPED, {"count": 4}),
    ]
    as_json = {"Content-Type": "application/json"}
    deep = b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for bad in (b"not json", b'{"events": [{"kind": "nonsense", "data": {}}]}', b'{"nothing": 1}', deep):
        assert httpx.post(ingest, content=bad, headers=as_json, timeout=10).status_code == 400
    # A web page may POST text/plain anywhere without asking first: it is refused unread.
    plain = {"Content-Type": "text/plain"}
    assert httpx.post(ingest, content=json.dumps(batch), headers=plain, timeout=10).status_code == 415
    assert server.log.last_id == 2  # nothing half-taken


def test_a_port_in_use_is_a_config_error(server: HudServer) -> None:
    with pytest.raises(pylon.ConfigError, match="could not listen"):
        HudServer(port=server.port).start(timeout=5)


def test_pylon_hud_serves_until_interrupted_and_a_callback_elsewhere_streams_to_it() -> None:
    import re
    import signal
    import subprocess
    import sys

    from dspy_pylon.local.embedded import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dspy_pylon.cli", "hud", "--port", str(port), "--token", "s3cret"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"pylon HUD: (http://127\.0\.0\.1:(\d+)/\?token=s3cret)\n", line)
        assert match is not None and int(match.group(2)) == port, line
        url = match.group(1)
        assert httpx.get(url, timeout=10).status_code == 200
        hud = pylon.HudCallback(url)  # from "another process": this one
        with dspy.context(lm=DummyLM([{"answer": "a"}]), callbacks=[hud]):
            dspy.Predict("question -> answer")(question="q")
        assert hud.flush(10)
        events = read_events(f"http://127.0.0.1:{port}/events?token=s3cret", 1)
        assert events[0]["data"]["kind"] == "node_start"  # type: ignore[index]
        hud.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_a_page_that_saw_an_earlier_server_is_told_to_start_over(server: HudServer) -> None:
    server.log.append(EventKind.RUN_COMPLETE, {"nodes": 1})
    events = read_events(f"{server.base_url}/events", 2, headers={"Last-Event-ID": "500"})
    assert events[0]["event"] == "reset"
    assert events[1]["sse_id"] == 1  # everything this server has, from the start


def test_requests_naming_another_host_are_refused(server: HudServer) -> None:
    # DNS rebinding: a site whose name now points at 127.0.0.1 sends its own name as Host.
    rebinding = httpx.get(f"{server.base_url}/events", headers={"Host": "evil.example:8765"}, timeout=10)
    assert rebinding.status_code == 400
    assert httpx.get(f"http://localhost:{server.port}/", timeout=10).status_code == 200


def test_a_token_with_any_characters_makes_a_url_that_works() -> None:
    with HudServer(token="a&b c+d#e/f") as odd:
        assert "a%26b%20c%2Bd%23e%2Ff" in odd.url
        assert httpx.get(odd.url, timeout=10).status_code == 200
        hud = pylon.HudCallback(odd.url)
        with dspy.context(lm=DummyLM([{"answer": "a"}]), callbacks=[hud]):
            dspy.Predict("question -> answer")(question="q")
        assert hud.flush(10)
        hud.close()
        assert odd.log.last_id > 0


def test_events_are_strict_json_even_with_nan_scores() -> None:
    import math

    from dspy_pylon.hud.events import HudEvent, candidate_event

    event = candidate_event("c", {"score": math.nan, "val": math.inf, "ok": 0.5}, None, 1)
    assert event["metrics"] == {"ok": 0.5}
    odd = HudEvent(1, EventKind.BUDGET, {"spent_msats": math.nan, "nested": [math.inf]})
    assert json.loads(odd.json)["data"] == {"spent_msats": None, "nested": [None]}
