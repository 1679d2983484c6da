"""The outcome stream of a node (:mod:`hpcbatch.execution.outcomes`): what travels together,
what a broken comm keeps. A comm that records its writes stands in for Dask's (the lowest
seam); the event loop and the threads are real."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest

from hpcbatch.execution.outcomes import (
    OUTCOME_HOLD_S,
    Outcome,
    OutcomeStream,
    outcome_from_wire,
    outcome_to_wire,
)

T = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _outcome(code: int = 0) -> Outcome:
    return Outcome(code, T, T, None, "/n/t", "node-1", {"user_cpu_s": 0.5})


class RecordingComm:
    def __init__(self, fail: bool = False) -> None:
        self.messages: list[list[dict[str, Any]]] = []
        self.fail = fail
        self.wrote = asyncio.Event()
        self._closed = False

    def closed(self) -> bool:
        return self._closed

    async def write(self, data: bytes) -> None:
        if self.fail:
            raise OSError("the comm broke")
        self.messages.append(msgpack.unpackb(data))
        self.wrote.set()

    def close(self) -> None:
        self._closed = True


async def _written(comm: RecordingComm) -> None:
    async with asyncio.timeout(5):
        await comm.wrote.wait()


def test_an_outcome_put_from_a_thread_reaches_the_stream_in_wire_form() -> None:
    async def go() -> list[list[dict[str, Any]]]:
        stream, comm = OutcomeStream(), RecordingComm()
        stream.bind(asyncio.get_running_loop().call_soon_threadsafe)
        serving = asyncio.ensure_future(stream.serve(comm))

        def report() -> None:
            stream.put("job-1/t1/0", _outcome(3))
            stream.send()
        threading.Thread(target=report).start()
        await _written(comm)
        comm.close()
        stream.put("wake", _outcome())  # the stream notices the closed comm at its next turn
        stream.send()
        await serving
        return comm.messages
    messages = asyncio.run(go())
    assert messages[0] == [{"key": "job-1/t1/0", **outcome_to_wire(_outcome(3))}]
    back = outcome_from_wire(messages[0][0])
    assert back.exit_code == 3 and back.start_time == T and back.usage == {"user_cpu_s": 0.5}


def test_held_outcomes_travel_together() -> None:
    async def go() -> tuple[list[list[dict[str, Any]]], bool]:
        stream, comm = OutcomeStream(), RecordingComm()
        stream.bind(asyncio.get_running_loop().call_soon_threadsafe)
        serving = asyncio.ensure_future(stream.serve(comm))
        await asyncio.sleep(0)  # the stream waits
        for i in range(5):  # five runs end while the node has many queued: held
            stream.put(f"job-1/t{i}/0", _outcome())
            stream.send(hold=True)
        holding = stream.holding
        await _written(comm)
        serving.cancel()
        return comm.messages, holding
    messages, holding = asyncio.run(go())
    assert holding
    assert [[o["key"] for o in m] for m in messages] == [[f"job-1/t{i}/0" for i in range(5)]]


def test_flush_held_sends_before_the_hold_ends() -> None:
    async def go() -> float:
        stream, comm = OutcomeStream(), RecordingComm()
        stream.bind(asyncio.get_running_loop().call_soon_threadsafe)
        serving = asyncio.ensure_future(stream.serve(comm))
        await asyncio.sleep(0)
        stream.put("job-1/t1/0", _outcome())
        stream.send(hold=True)
        assert stream.holding
        stream.flush_held()  # the node's queue drained: no reason to wait
        assert not stream.holding
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        sent = len(comm.messages)
        serving.cancel()
        return sent
    # Sent within two loop turns, long before the OUTCOME_HOLD_S timer would fire.
    assert OUTCOME_HOLD_S > 0 and asyncio.run(go()) == 1


def test_a_broken_write_keeps_the_batch_for_the_next_stream() -> None:
    async def go() -> tuple[list[str], list[list[dict[str, Any]]]]:
        stream = OutcomeStream()
        stream.bind(asyncio.get_running_loop().call_soon_threadsafe)
        stream.put("job-1/t1/0", _outcome())
        await stream.serve(RecordingComm(fail=True))  # returns: the stream broke
        kept = [o["key"] for o in stream.pending()]
        comm = RecordingComm()
        serving = asyncio.ensure_future(stream.serve(comm))  # the service reconnects
        await _written(comm)
        serving.cancel()
        return kept, comm.messages
    kept, messages = asyncio.run(go())
    assert kept == ["job-1/t1/0"]
    assert [o["key"] for o in messages[0]] == ["job-1/t1/0"]


def test_a_stream_without_a_loop_only_keeps_outcomes() -> None:
    stream = OutcomeStream()  # an agent with no worker (benchmarks): nothing to wake
    stream.put("job-1/t1/0", _outcome())
    stream.send()
    assert [o["key"] for o in stream.pending()] == ["job-1/t1/0"]


@pytest.mark.parametrize("bad", [
    {"exit_code": True},  # a bool is not an exit code
    {"start": "yesterday"},
    {"failure": ["not", "a", "map"]},
    {"task_root_dir": 7},
    {"usage": {"user_cpu_s": "1"}},
])
def test_outcome_from_wire_refuses_wrong_types(bad: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="malformed outcome"):
        outcome_from_wire({**outcome_to_wire(_outcome()), **bad})
