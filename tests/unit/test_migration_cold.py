"""The cold migration's state machine (migration/cold.py), alone: a model of where the
instance runs checked against any order of events, as agents and the checker send them."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from dockyard.migration import cold
from dockyard.migration.cold import Act, Event, Status

T0 = datetime(2026, 1, 1)
MINUTE = timedelta(minutes=1)


class World:
    """Where the instance lives and what each host holds, as the acts change it."""

    def __init__(self) -> None:
        self.status = Status.snapshotting
        self.home = "source"  # whose desired state owns it
        self.running_on: set[str] = {"source"}
        self.target_has = False
        self.moves = 0

    def send(self, event: Event) -> None:
        move = cold.step(self.status, event)
        self.status = move.status
        if move.act == Act.move:
            self.home, self.running_on, self.target_has = "target", set(), True
            self.moves += 1
        elif move.act == Act.finish:
            self.running_on = {"target"}
        elif move.act == Act.roll_back:
            self.home, self.running_on, self.target_has = "source", {"source"}, False


@given(st.lists(st.sampled_from(list(Event)), max_size=12))
def test_any_order_of_events_ends_on_one_host_and_never_moves_twice(events):
    world = World()
    for event in events:
        before = world.status
        world.send(event)
        assert len(world.running_on) <= 1  # the IP never answers from two hosts
        if before in (Status.finished, Status.error):
            assert world.status == before  # terminal: later reports change nothing
    assert world.moves <= 1
    if world.status == Status.error:
        assert world.home == "source" and world.running_on == {"source"}
        assert not world.target_has  # nothing left on the target
    if world.status == Status.finished:
        assert world.home == "target" and world.running_on == {"target"}


def test_the_happy_path_is_snapshot_then_start():
    world = World()
    world.send(Event.snapshot_done)
    assert (world.status, world.home, world.running_on) == (Status.starting, "target", set())
    world.send(Event.target_active)
    assert (world.status, world.running_on) == (Status.finished, {"target"})


def test_a_repeated_snapshot_report_does_not_move_it_again():
    assert cold.step(Status.starting, Event.snapshot_done).act == Act.nothing
    assert cold.step(Status.finished, Event.target_active).act == Act.nothing


def test_a_source_that_dies_after_the_move_does_not_stop_the_target():
    assert cold.step(Status.starting, Event.source_down).act == Act.nothing
    assert cold.step(Status.snapshotting, Event.source_down).act == Act.roll_back


def test_check_raises_the_host_down_before_the_deadline():
    at = T0 + 5 * MINUTE
    check = cold.check
    assert check(Status.starting, T0, at, 2 * MINUTE, True, False) == Event.target_down
    assert check(Status.snapshotting, T0, at, 2 * MINUTE, False, True) == Event.source_down
    assert check(Status.starting, T0, at, 2 * MINUTE, False, True) == Event.timed_out
    assert check(Status.starting, T0, at, 10 * MINUTE, True, True) is None
    assert check(Status.finished, T0, at, MINUTE, False, False) is None


def test_the_start_phase_is_timed_from_the_stop_so_the_timeout_bounds_the_downtime():
    stopped = T0 + MINUTE
    assert cold.since(Status.starting, T0, stopped) == stopped
    assert cold.since(Status.snapshotting, T0, None) == T0


def test_stopped_at_and_downtime_from_the_agents_seconds():
    reported = T0 + timedelta(seconds=10)
    stopped = cold.stopped_at(reported, {"stop": 2.0, "commit": 3.0, "push": 4.0})
    assert stopped == T0 + timedelta(seconds=3)
    assert cold.downtime(stopped, reported + timedelta(seconds=2)) == 9.0
    assert cold.downtime(None, reported) is None


def test_reasons_say_which_host_and_what():
    why = cold.reason(Event.target_failed, "h1", "h2", MINUTE, "pull: denied")
    assert why == "h2 could not start it: pull: denied"
    assert "60 s" in cold.reason(Event.timed_out, "h1", "h2", MINUTE)


def test_the_start_phase_counts_from_the_handover_not_from_the_stop():
    """A 100 s push must not eat the target's time: starting's clock begins when the
    snapshot was reported (the stop, then commit + push beside the volumes' copy), not
    when the source stopped."""
    t0 = datetime(2026, 1, 1)
    stopped = t0 + timedelta(seconds=5)
    seconds = {"stop": 1.0, "commit": 2.0, "push": 100.0, "volumes": 8.0}
    since = cold.since(cold.Status.starting, t0, stopped, seconds)
    assert since == stopped + timedelta(seconds=102)
    now = since + timedelta(seconds=60)
    assert cold.check(cold.Status.starting, since, now, timedelta(seconds=120), True, True) is None


def test_a_queued_migration_waits_without_deadline_and_begins_on_its_turn():
    long_ago = datetime(2026, 1, 1)
    later = long_ago + timedelta(days=1)
    assert cold.check(cold.Status.queued, long_ago, later, timedelta(seconds=1), True, True) is None
    move = cold.step(cold.Status.queued, cold.Event.turn)
    assert (move.status, move.act) == (cold.Status.snapshotting, cold.Act.begin)


def test_the_volumes_copy_runs_beside_the_root_filesystem_so_the_longer_one_counts():
    assert cold.after_stop({"stop": 1.0, "commit": 0.5, "push": 2.0, "volumes": 4.0}) == 4.0
    assert cold.after_stop({"stop": 1.0, "commit": 0.5, "flatten": 3.0, "push": 2.0}) == 5.5
    assert cold.after_stop({"push": 2.0, "volumes": 1.0, "start": 0.5}) == 2.5
