"""The node's queue of task runs waiting for slots, as pure bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass

from hpcbatch.execution.slot_queue import SlotQueue


@dataclass
class Run:
    key: str
    slots: int | None = 1
    node_slots: int = 2


def test_runs_start_first_in_first_out_while_their_slots_are_free() -> None:
    q: SlotQueue[Run] = SlotQueue()
    for key, slots in (("a", 1), ("b", 2), ("c", 1)):
        q.add(Run(key, slots), now=0.0)
    assert q.pop_startable().key == "a"
    assert q.pop_startable() is None  # b needs 2, one is held: c waits behind it
    assert q.keys() == ["b", "c"] and q.held_slots == 1
    assert q.release("a") and not q.release("a")
    assert q.pop_startable().key == "b" and q.pop_startable() is None
    q.release("b")
    assert q.pop_startable().key == "c" and len(q) == 0


def test_a_run_bigger_than_the_node_starts_alone() -> None:
    q: SlotQueue[Run] = SlotQueue()
    q.add(Run("big", 4), now=0.0)
    assert q.pop_startable().key == "big" and q.held_slots == 4


def test_remove_overdue_and_clear() -> None:
    q: SlotQueue[Run] = SlotQueue()
    q.add(Run("x"), now=0.0)
    q.add(Run("held"), now=0.0)
    q.add(Run("y"), now=1.0)
    q.add(Run("z"), now=2.0)
    assert q.remove("held").key == "held" and q.remove("held") is None
    assert [r.key for r in q.overdue(now=2.5, after_s=1.5)] == ["x", "y"]
    assert q.keys() == ["z"] and q.oldest() == 2.0
    assert q.clear() == 1 and q.oldest() is None
