"""The session manager with a registry, under autojump_clock: exact virtual times.

Two managers share one :class:`~tests.support.fakes.FakeRegistryHub` (what Redis would hold),
so they are two "processes" of one deployment, each with its own fake backend. The
hub keeps the Lua scripts' semantics; every call to it costs ``ROUND_TRIP``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from jarvis_trio.errors import RegistryUnavailable
from jarvis_trio.outcomes import Outcome
from jarvis_trio.registry import Claim
from jarvis_trio.sessions import SessionManager
from jarvis_trio.streams import Stream
from tests.conftest import log_lines
from tests.support.fakes import FakeBackend, FakeLease, FakeRegistry, FakeRegistryHub, job

ROUND_TRIP = 0.001


@asynccontextmanager
async def open_processes(
    hub: FakeRegistryHub, backends: list[FakeBackend], *, budget: float = 2.0
) -> AsyncIterator[list[SessionManager]]:
    managers = [
        SessionManager(backend, join_budget=budget, registry=FakeRegistry(hub, f"w{i}"))
        for i, backend in enumerate(backends)
    ]
    async with trio.open_nursery() as nursery:
        for manager in managers:
            await nursery.start(manager.run)
        yield managers
        for manager in managers:
            await manager.shutdown()


async def request(manager: SessionManager, prompt: str, session: str = "s1") -> Stream:
    """What the HTTP edge does: claim, admit, wait for the turn and for the upstream."""
    assert manager.registry is not None
    claim = await manager.registry.claim("owner", session)
    stream = manager.submit("owner", session, job(prompt), f"req-{prompt}", claim=claim)
    await manager.wait_turn(stream)
    await stream.wait_ready()
    return stream


async def test_a_request_on_another_process_supersedes_and_starts_once_the_old_one_died(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = FakeRegistryHub(round_trip=ROUND_TRIP)
    here, there = FakeBackend(die_after={"A": 0.3}), FakeBackend()
    async with open_processes(hub, [here, there]) as (one, two):
        a = await request(one, "A")
        await trio.sleep(1.0)
        t0 = trio.current_time()
        b = await request(two, "B")
        # Claim (1 round trip), A cancelled at once by the message, A takes 0.3 s to
        # die, its release (1 round trip) wakes B, whose take is 1 more round trip.
        assert here.ends["A"] == pytest.approx(t0 + ROUND_TRIP + 0.3)
        assert there.starts["B"] == pytest.approx(t0 + 3 * ROUND_TRIP + 0.3)
        _, a_ending = await a.collect()
        assert a_ending.outcome is Outcome.SUPERSEDED
        assert b.cancel_reason is None
    assert any(
        e.startswith(f"registry_superseded trace={a.id} by_worker=w1 worker=w0")
        for e in log_lines(caplog)
    )


async def test_a_stuck_stream_elsewhere_is_given_up_on_at_the_budget(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = FakeRegistryHub(round_trip=ROUND_TRIP)
    here, there = FakeBackend(die_after={"A": 10.0}), FakeBackend()
    async with open_processes(hub, [here, there]) as (one, two):
        await request(one, "A")
        t0 = trio.current_time()
        await request(two, "B")
        # The budget counts from B's claim; then the forced take is one round trip.
        assert there.starts["B"] == pytest.approx(t0 + ROUND_TRIP + 2.0 + ROUND_TRIP)
        assert "A" not in here.ends  # still dying: a zombie, which no longer blocks B
    # B's process reports the join it gave up on (A's own process reports it too, as
    # a cancelled stream that outlived its budget).
    timed_out = [e for e in log_lines(caplog) if e.startswith("prev_stream_timeout_on_cancel")]
    assert len([e for e in timed_out if "remote=True" in e]) == 1, timed_out


async def test_a_crashed_holder_s_lease_frees_the_session_when_it_expires(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = FakeRegistryHub(round_trip=ROUND_TRIP)
    backend = FakeBackend()
    async with open_processes(hub, [backend], budget=6.0) as (one,):
        # A process that held generation 5 and crashed: its lease has 1 s to go.
        t0 = trio.current_time()
        hub.generations["owner/s1"] = 5
        hub.leases["owner/s1"] = FakeLease(5, expires=t0 + 1.0)
        b = await request(one, "B")
        # B waits for the expiry, and looks again at most 0.1 s apart.
        assert t0 + 1.0 <= backend.starts["B"] <= t0 + 1.0 + 0.1 + 2 * ROUND_TRIP
        assert b.cancel_reason is None
    assert not any(e.startswith("prev_stream_timeout_on_cancel") for e in log_lines(caplog))


async def test_an_older_claim_never_starts_and_leaves_the_newer_stream_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = FakeRegistryHub(round_trip=ROUND_TRIP)
    backend = FakeBackend()
    async with open_processes(hub, [backend]) as (one,):
        assert one.registry is not None
        older = await one.registry.claim("owner", "s1")
        newer = await one.registry.claim("owner", "s1")
        b = one.submit("owner", "s1", job("B"), "req-B", claim=newer)
        a = one.submit("owner", "s1", job("A"), "req-A", claim=older)
        await one.wait_turn(a)
        assert a.ending is not None and a.ending.outcome is Outcome.SUPERSEDED
        await b.wait_ready()
        assert "A" not in backend.starts and "B" in backend.starts
        assert b.cancel_reason is None
        assert one.statistics().live_streams == 1


async def test_a_stream_that_missed_its_cancel_stops_at_its_next_renewal(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = FakeRegistryHub(round_trip=ROUND_TRIP, lease_seconds=3.0, deliver=False)
    here, there = FakeBackend(), FakeBackend()
    async with open_processes(hub, [here, there], budget=5.0) as (one, two):
        a = await request(one, "A")
        await trio.sleep(0.25)
        b = await request(two, "B")  # its cancel message is lost
        # A renews a third of the lease after it took it, finds B's generation and
        # ends; B, which never heard A's "finished" either, looks again within 0.1 s.
        assert here.ends["A"] == pytest.approx(here.starts["A"] + 1.0 + ROUND_TRIP)
        assert here.ends["A"] < there.starts["B"] <= here.ends["A"] + 0.1 + 2 * ROUND_TRIP
        _, a_ending = await a.collect()
        assert a_ending.outcome is Outcome.SUPERSEDED
        assert b.cancel_reason is None
    assert any(e.startswith(f"registry_stale trace={a.id}") for e in log_lines(caplog))


async def test_stop_on_another_process_stops_the_stream_and_waits_for_it(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = FakeRegistryHub(round_trip=ROUND_TRIP)
    here = FakeBackend(die_after={"A": 0.3})
    async with open_processes(hub, [here, FakeBackend()]) as (one, two):
        a = await request(one, "A")
        report = await two.stop("owner", "s1")
        assert report.result == "finished_cleanly" and report.stream_id is None
        # Claim, A's 0.3 s to die, its release, the Stop's take and its release.
        assert report.waited_ms == pytest.approx((0.3 + 4 * ROUND_TRIP) * 1000)
        _, a_ending = await a.collect()
        assert a_ending.outcome is Outcome.STOPPED
        nothing = await two.stop("owner", "s1")
        assert nothing.result == "nothing_live"
    assert any(
        e.startswith(f"registry_stopped trace={a.id} by_worker=w1 worker=w0")
        for e in log_lines(caplog)
    )


class CutOffRegistry(FakeRegistry):
    """A process that has lost Redis: every renewal fails, as a timeout would."""

    cut_off = False

    async def renew(self, claim: Claim) -> bool:
        if self.cut_off:
            await trio.sleep(0.5)  # the call's timeout
            raise RegistryUnavailable("cut off")
        return await super().renew(claim)


async def test_a_stream_cut_off_from_the_registry_stops_before_its_lease_can_expire(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in review: a stream whose renewals failed streamed on forever, also after
    a newer request on another process had taken the session."""
    hub = FakeRegistryHub(round_trip=ROUND_TRIP)
    registry = CutOffRegistry(hub, "w0")
    manager = SessionManager(FakeBackend(), registry=registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        a = await request(manager, "A")
        registry.cut_off = True
        cut_at = trio.current_time()
        _, ending = await a.collect()
        stopped_after = trio.current_time() - cut_at
        await manager.shutdown()
    lease = registry.lease_seconds
    assert ending.outcome is Outcome.SUPERSEDED
    # Two failed renewals (a third of the lease apart, each 0.5 s): before the lease ends.
    assert stopped_after < lease
    assert any(e.startswith(f"registry_stale trace={a.id}") for e in log_lines(caplog))
