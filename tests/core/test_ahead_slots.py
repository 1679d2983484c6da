"""How many short runs the service sends a node ahead of its free slots
(``NodeRuntime.ahead_slots``): only for short runs, bounded, never on a node that
takes no tasks, never on simulated nodes."""

from __future__ import annotations

import pytest

from hpcbatch.core.node_runtime import AHEAD_PER_SLOT, AHEAD_WINDOW_S, NodeRuntime
from hpcbatch.providers.inventory import Host


def node(slots: int = 2, provider: str = "ssh", **kw) -> NodeRuntime:
    kw = {"state": "idle", "worker": "tls://127.0.0.1:1", **kw}
    return NodeRuntime(pool_key="p", pool_id="p", node_id="n1", slots=slots, order=0,
                       host=Host(name="n1", address="127.0.0.1", provider=provider), **kw)


def test_no_run_ahead_before_the_node_has_reported_a_run() -> None:
    assert node().ahead_slots == 0


def test_long_runs_are_never_sent_ahead() -> None:
    n = node()
    n.note_run_time(AHEAD_WINDOW_S * 2)
    assert n.ahead_slots == 0
    n.note_run_time(AHEAD_WINDOW_S)  # the average is still above the window
    assert n.ahead_slots == 0


@pytest.mark.parametrize(("run_s", "per_slot"), [
    (AHEAD_WINDOW_S / 2, 2), (AHEAD_WINDOW_S / 5, 5), (0.0, AHEAD_PER_SLOT)])
def test_short_runs_are_sent_ahead_up_to_the_window(run_s: float, per_slot: int) -> None:
    n = node(slots=2)
    n.note_run_time(run_s)
    assert n.ahead_slots == 2 * per_slot
    n.used_slots = 2 + 2 * per_slot - 1  # all but one of the room taken
    assert n.free_slots == 0 and n.ahead_slots == 1
    n.used_slots += 1
    assert n.ahead_slots == 0


def test_the_average_follows_the_node_s_latest_runs() -> None:
    n = node()
    n.note_run_time(1.0)
    for _ in range(40):
        n.note_run_time(0.001)
    assert n.run_s is not None and n.run_s < AHEAD_WINDOW_S / 10
    assert n.ahead_slots > 0
    for _ in range(40):
        n.note_run_time(1.0)
    assert n.ahead_slots == 0


@pytest.mark.parametrize("change", [{"state": "offline"}, {"scheduling_state": "disabled"},
                                    {"worker": None}])
def test_a_node_that_takes_no_tasks_takes_none_ahead(change: dict) -> None:
    n = node(**change)
    n.note_run_time(0.001)
    assert n.ahead_slots == 0


def test_simulated_nodes_take_none_ahead() -> None:
    n = node(provider="simulated")
    n.note_run_time(0.001)
    assert n.ahead_slots == 0


def test_no_more_runs_ahead_where_long_runs_hold_every_slot(monkeypatch) -> None:
    """A node whose slots are all held, and that has ended no run for STALL_S (long runs
    hold them), is sent no runs ahead: they would wait as long."""
    import hpcbatch.core.node_runtime as nr

    clock = [100.0]
    monkeypatch.setattr(nr.time, "monotonic", lambda: clock[0])
    n = node(slots=2)
    n.note_run_time(0.001)
    n.used_slots = 5  # two running, three waiting
    assert n.ahead_slots > 0
    clock[0] += nr.STALL_S + 0.01
    assert n.ahead_slots == 0
    n.used_slots = 2  # both slots held, nothing waits: still none ahead
    assert n.ahead_slots == 0
    n.used_slots = 1  # a free slot: runs may go there again
    assert n.ahead_slots > 0
    n.used_slots = 5
    n.note_run_time(0.001)  # an end was reported: the node moves again
    assert n.ahead_slots > 0
