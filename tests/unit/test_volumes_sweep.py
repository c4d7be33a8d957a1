"""The agent's volume sweep: level-triggered, and it never removes what it cannot know."""

from hypothesis import given
from hypothesis import strategies as st

from dockyard.compute.volumes import FakeVolumes, sweep
from dockyard.model import VolumeAttachment
from tests.unit.test_reconcile import want


def using(iid, *volume_ids, power="running"):
    w = want(iid, power=power)
    mounts = [
        VolumeAttachment(volume=f"v{i}", path=f"/d{i}", volume_id=v, size_mb=64)
        for i, v in enumerate(volume_ids)
    ]
    return w.model_copy(update={"volumes": mounts})


def test_a_used_volume_stays_an_unused_one_is_detached_a_dropped_one_removed():
    desired = {"a": using("a", "v1"), "b": using("b", "v2", power="deleted")}
    todo = sweep(desired, ["v1", "v2", "v3"], {"v1", "v2", "v3", "v4"}, {"v1", "v2", "v3", "v4"})
    assert todo.detach == {"v3"}  # listed but unused: its file is kept
    assert todo.remove == {"v4"}  # the server dropped it and nothing uses it


def test_without_the_servers_word_nothing_is_removed():
    assert sweep(None, None, {"v1"}, {"v1"}).remove == set()
    assert sweep(None, ["v9"], {"v1"}, {"v1"}).detach == set()
    todo = sweep({}, None, {"v1"}, {"v1"})  # an older server: no volume list
    assert todo.remove == set() and todo.detach == {"v1"}


@given(
    used=st.sets(st.sampled_from("abcdef")),
    listed=st.sets(st.sampled_from("abcdef")),
    present=st.sets(st.sampled_from("abcdef")),
)
def test_a_used_volume_is_never_touched_and_applying_twice_converges(used, listed, present):
    desired = {"i": using("i", *sorted(used))}
    store = FakeVolumes()
    for v in present:
        store.attach(v, 64)
    for _ in range(2):
        todo = sweep(desired, sorted(listed), store.present(), store.attached())
        assert not (todo.detach | todo.remove) & used
        for v in todo.detach:
            store.detach(v)
        for v in todo.remove:
            store.remove(v)
    assert store.present() == present & (used | listed)
    assert store.attached() == present & used
    again = sweep(desired, sorted(listed), store.present(), store.attached())
    assert not again.detach and not again.remove  # in sync: nothing left to do
