"""Leader election decisions (thresher/operator/leaderelection.py): client-go's rules, with the
clock passed in. ``now`` is monotonic seconds, ``WALL`` what goes into the Lease."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from thresher.operator.leaderelection import Election, ElectionConfig, LeaseRecord, standby_alive

WALL = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
CONFIG = ElectionConfig(lease_duration=15, renew_deadline=10, retry_period=2)


def held_by(holder: str | None, *, transitions: int = 3, renewed: datetime = WALL) -> LeaseRecord:
    return LeaseRecord(holder, 15, WALL, renewed, transitions)


def test_no_lease_is_created_held():
    d = Election("a", CONFIG).decide(None, now=0, wall=WALL)
    assert d.action == "create" and d.reason == "created"
    assert d.record == LeaseRecord("a", 15, WALL, WALL, 0)


def test_a_valid_lease_of_another_is_waited_for():
    e = Election("b", CONFIG)
    assert e.decide(held_by("a"), now=100, wall=WALL).action == "wait"
    # Unchanged for 14.9 s of *our* clock: still valid, whatever its renewTime says.
    assert e.decide(held_by("a"), now=114.9, wall=WALL).action == "wait"


def test_an_expired_lease_is_stolen_with_a_transition():
    e = Election("b", CONFIG)
    e.decide(held_by("a"), now=100, wall=WALL)
    d = e.decide(held_by("a"), now=115, wall=WALL)
    assert d.action == "update" and d.reason == "stole"
    assert d.record == LeaseRecord("b", 15, WALL, WALL, 4)


def test_a_renewal_seen_restarts_the_wait():
    """The holder renewed (the record changed): the 15 s count from when we saw that."""
    e = Election("b", CONFIG)
    e.decide(held_by("a"), now=100, wall=WALL)
    later = WALL.replace(second=10)
    assert e.decide(held_by("a", renewed=later), now=110, wall=WALL).action == "wait"
    assert e.decide(held_by("a", renewed=later), now=124.9, wall=WALL).action == "wait"
    assert e.decide(held_by("a", renewed=later), now=125, wall=WALL).reason == "stole"


def test_skewed_renew_time_does_not_expire_a_live_lease():
    """A holder whose clock is an hour behind still holds its lease while it renews."""
    e = Election("b", CONFIG)
    for i in range(10):
        stamp = WALL.replace(hour=2, second=i * 2)
        assert e.decide(held_by("a", renewed=stamp), now=100 + i * 2, wall=WALL).action == "wait"


def test_a_released_lease_is_acquired_at_once():
    e = Election("b", CONFIG)
    released = LeaseRecord(None, 1, None, WALL, 3)
    d = e.decide(released, now=0, wall=WALL)
    assert d.action == "update" and d.reason == "acquired"
    assert d.record.holder == "b" and d.record.transitions == 4


def test_the_holder_renews_keeping_acquire_time_and_transitions():
    e = Election("a", CONFIG)
    mine = LeaseRecord("a", 15, WALL.replace(minute=0), WALL, 2)
    later = WALL.replace(second=30)
    d = e.decide(mine, now=5, wall=later)
    assert d.action == "update" and d.reason == "renewed"
    assert d.record == LeaseRecord("a", 15, WALL.replace(minute=0), later, 2)


def test_leadership_lasts_until_the_renew_deadline_then_is_lost():
    e = Election("a", CONFIG)
    assert not e.leading(0) and not e.lost(0)  # never led: nothing to lose
    d = e.decide(None, now=0, wall=WALL)
    e.wrote(d.record, now=1)
    assert e.leading(10.9) and not e.lost(10.9)
    assert not e.leading(11) and e.lost(11)
    e.wrote(e.decide(d.record, now=10.5, wall=WALL).record, now=10.5)  # a late but successful renewal
    assert e.leading(20) and not e.lost(20)


def test_the_old_leader_stops_before_anyone_may_steal():
    """Timings: a leader that last renewed at t has stopped by t + renew_deadline; a standby
    that saw that renewal at t (or later) steals no earlier than t + lease_duration."""
    leader, standby = Election("a", CONFIG), Election("b", CONFIG)
    record = leader.decide(None, now=0, wall=WALL).record
    leader.wrote(record, now=0)
    standby.decide(record, now=0, wall=WALL)
    first_steal = next(t / 10 for t in range(0, 400) if standby.decide(record, now=t / 10, wall=WALL).action != "wait")
    first_lost = next(t / 10 for t in range(0, 400) if leader.lost(t / 10))
    assert first_lost == 10 and first_steal == 15


def test_release_only_what_is_ours():
    e = Election("a", CONFIG)
    mine = LeaseRecord("a", 15, WALL, WALL, 2)
    e.wrote(mine, now=0)
    assert e.release(held_by("b"), WALL) is None
    assert e.release(None, WALL) is None
    assert e.release(mine, WALL) == LeaseRecord(None, 1, None, WALL, 2)
    assert not e.leading(0)


@pytest.mark.parametrize("kwargs, message", [
    ({"lease_duration": 10, "renew_deadline": 10}, "longer than the renew deadline"),
    ({"renew_deadline": 2, "retry_period": 2}, "1.2 x the retry period"),
])
def test_inconsistent_timings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ElectionConfig(**kwargs)


def test_an_empty_identity_is_refused():
    with pytest.raises(ValueError, match="identity"):
        Election("", CONFIG)


def test_standby_liveness_follows_the_election_loop():
    window = 3 * (1.2 * 2 + 2 * 5)  # 37.2 s
    assert standby_alive(None, 1000, CONFIG, 5)  # starting
    assert standby_alive(1000, 1000 + window - 0.1, CONFIG, 5)
    assert not standby_alive(1000, 1000 + window, CONFIG, 5)
