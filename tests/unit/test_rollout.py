"""The deploy planner, driven by a small simulated stack: whatever order members
become ready in, a rollout keeps enough of them ready, never holds too many, and ends."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.paas.rollout import Budget, Member, Plan, Strategy, budget, plan


def _stack(n: int, release: str = "r1") -> list[Member]:
    return [Member(f"m{i:02d}", release, ready=True) for i in range(n)]


def _apply(members: list[Member], p: Plan, target: str, serial: list[int]) -> list[Member]:
    out = []
    for m in members:
        if m.id in p.delete:
            out.append(replace(m, leaving=True, busy=True, ready=False))
        elif m.id in p.rebuild:
            out.append(replace(m, release=target, busy=True, ready=False))
        else:
            out.append(m)
    for _ in range(p.create):
        serial[0] += 1
        out.append(Member(f"n{serial[0]:03d}", target, ready=False, busy=True))
    return out


def _settle(members: list[Member], pick: list[int], healthy: bool) -> list[Member]:
    """One busy member finishes its task (chosen by ``pick``): gone, or running."""
    busy = [i for i, m in enumerate(members) if m.busy]
    if not busy:
        return members
    i = busy[pick.pop() % len(busy) if pick else 0]
    m = members[i]
    if m.leaving:
        return members[:i] + members[i + 1 :]
    return [*members[:i], replace(m, busy=False, ready=healthy), *members[i + 1 :]]


@settings(max_examples=300, deadline=None)
@given(
    replicas=st.integers(1, 8),
    strategy=st.sampled_from(list(Strategy)),
    mu=st.sampled_from(["0", "1", "2", "25%", "50%", "100%"]),
    ms=st.sampled_from(["0", "1", "2", "25%", "100%"]),
    picks=st.lists(st.integers(0, 100), max_size=200),
)
def test_a_rollout_keeps_its_budget_and_ends(replicas, strategy, mu, ms, picks):
    b = budget(replicas, mu, ms, strategy)
    members, serial, floor = _stack(replicas), [0], replicas - b.max_unavailable
    for _ in range(10 * replicas + 40):
        p = plan(members, "r2", strategy, b)
        if p.done:
            break
        members = _apply(members, p, "r2", serial)
        ready = sum(m.ready for m in members)
        assert ready >= floor, (p, members)
        assert len(members) <= replicas + b.max_surge, (p, members)
        if strategy == Strategy.in_place:
            assert len(members) == replicas  # in place: the same instances, no extra
        members = _settle(members, picks, healthy=True)
    else:
        raise AssertionError(f"never done: {members}")
    assert sorted(m.release for m in members) == ["r2"] * replicas


@settings(max_examples=150, deadline=None)
@given(replicas=st.integers(1, 6), strategy=st.sampled_from(list(Strategy)))
def test_an_unhealthy_release_stops_at_the_budget_and_asks_to_roll_back(replicas, strategy):
    b = budget(replicas, "1", "1", strategy)
    members, serial = _stack(replicas), [0]
    for _ in range(6 * replicas + 10):
        p = plan(members, "r2", strategy, b)
        assert not p.done
        members = _settle(_apply(members, p, "r2", serial), [], healthy=False)
        assert sum(m.ready for m in members) >= replicas - b.max_unavailable
    # it went no further than max_unavailable members of the bad release
    bad = sum(m.release == "r2" and not m.leaving for m in members)
    assert bad <= b.max_unavailable + b.max_surge
    assert plan(members, "r2", strategy, b, overdue=True).rollback


def test_in_place_rebuilds_at_most_max_unavailable_at_a_time():
    b = budget(4, "2", "0", Strategy.in_place)
    p = plan(_stack(4), "r2", Strategy.in_place, b)
    assert len(p.rebuild) == 2 and not p.create and not p.delete


def test_an_unready_old_member_is_rebuilt_at_no_cost():
    members = _stack(3)
    members[2] = replace(members[2], ready=False)
    p = plan(members, "r2", Strategy.in_place, budget(3, "1", "0", Strategy.in_place))
    # one down already: only the unready one may go (it costs no readiness)
    assert p.rebuild == ["m02"]


def test_scale_is_a_plan_too():
    b = budget(5, "1", "1", Strategy.in_place)
    assert plan(_stack(3), "r1", Strategy.in_place, b).create == 2
    down = plan(_stack(5), "r1", Strategy.in_place, Budget(3, 2, 0))
    assert len(down.delete) == 2


def test_budgets_round_as_kubernetes_does_and_always_move():
    assert budget(10, "25%", "25%", Strategy.surge) == Budget(10, 2, 3)
    assert budget(3, "0", "0", Strategy.in_place).max_unavailable == 1
    assert budget(3, "0", "0", Strategy.surge).max_surge == 1
