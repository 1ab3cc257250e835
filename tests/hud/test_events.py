"""The HUD's event log and what its events may carry (pure)."""

from __future__ import annotations

from dspy_pylon.hud.events import EventKind, EventLog, budget_event, candidate_event, node_event
from dspy_pylon.trace.graph import NodeStatus, NodeType, TraceNode


def test_events_are_numbered_and_a_reconnecting_page_gets_what_it_missed() -> None:
    log = EventLog(capacity=5)
    for i in range(3):
        log.append(EventKind.RUN_COMPLETE, {"n": i})
    events, missed = log.since(1)
    assert [e.id for e in events] == [2, 3] and missed == 0
    for i in range(4):
        log.append(EventKind.RUN_COMPLETE, {"n": i})
    assert log.last_id == 7
    events, missed = log.since(0)  # only the latest five are kept: two fell out of the window
    assert [e.id for e in events] == [3, 4, 5, 6, 7] and missed == 2
    assert log.since(7) == ([], 0)
    events, _ = log.since(3, limit=2)
    assert [e.id for e in events] == [4, 5]
    assert EventLog().since(0) == ([], 0)


def _node(**values: object) -> TraceNode:
    base: dict[str, object] = {
        "id": "c" * 32,
        "parent_id": "p" * 32,
        "type": NodeType.LM,
        "name": "pylon:swarm",
        "start_ns": 10,
        "end_ns": 30,
        "status": NodeStatus.OK,
        "inputs": {"sha256": "a" * 64},
        "outputs": {"sha256": "b" * 64},
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "cost_msats": 3000},
        "route": {"venue": "swarm", "provider": "f" * 64, "job_id": "e" * 64, "base_url": "http://u:pw@host"},
        "attributes": {"cache_hit": False, "secret": "never shown"},
    }
    base.update(values)
    return TraceNode(**base)  # type: ignore[arg-type]


def test_a_node_event_carries_display_data_and_nothing_else() -> None:
    started = node_event(_node(end_ns=None, status=NodeStatus.RUNNING), ended=False)
    assert started["status"] == "running" and "usage" not in started and "end_ns" not in started
    ended = node_event(_node(), ended=True)
    assert ended["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "cost_msats": 3000}
    assert ended["route"] == {"venue": "swarm", "provider": "f" * 64, "job_id": "e" * 64}  # no base URL
    assert ended["outputs"] == {"sha256": "b" * 64} and ended["cache_hit"] is False
    assert "never shown" not in str(ended) and "pw@" not in str(ended)
    kept = node_event(_node(inputs="x" * 5000), ended=True)
    assert kept["inputs"] == "x" * 2000  # kept content, cut short


def test_a_sandbox_node_shows_its_job_status_and_cost() -> None:
    node = _node(
        type=NodeType.SANDBOX,
        name="sandbox small",
        usage={"cost_msats": 1200},
        attributes={"sandbox_status": "oom", "input_sha256": "a" * 64},
    )
    ended = node_event(node, ended=True)
    assert ended["type"] == "sandbox" and ended["sandbox_status"] == "oom"
    assert ended["usage"] == {"cost_msats": 1200} and ended["route"]["job_id"] == "e" * 64


def test_candidates_and_budgets() -> None:
    event = candidate_event("cid", {"val_accuracy": 0.75, "flag": True, "note": "x"}, "parent", 5)
    assert event == {"candidate_id": "cid", "parent_id": "parent", "metrics": {"val_accuracy": 0.75}, "at_ns": 5}
    assert budget_event("pylon:swarm", 3000, None) == {
        "model": "pylon:swarm",
        "key": "pylon:swarm",
        "spent_msats": 3000,
        "limit_msats": None,
    }
