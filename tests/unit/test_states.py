import pytest

from dockyard import states
from dockyard.errors import Conflict
from dockyard.model import InstanceReport, PowerState, TaskState, VmState


def test_console_status_words():
    assert states.status(VmState.active, None) == "ACTIVE"
    assert states.status(VmState.active, TaskState.rebooting) == "REBOOT"
    assert states.status(VmState.stopped, None) == "SHUTOFF"
    assert states.status(VmState.building, TaskState.spawning) == "BUILD"


@pytest.mark.parametrize(
    "action,vm,task",
    [
        ("start", VmState.active, None),
        ("stop", VmState.stopped, None),
        ("reboot", VmState.stopped, None),
        ("stop", VmState.active, TaskState.rebooting),
        ("delete", VmState.active, TaskState.deleting),
    ],
)
def test_refused_actions_say_why(action, vm, task):
    with pytest.raises(Conflict) as err:
        states.begin(action, vm, task)
    assert action in err.value.detail or "deleted" in err.value.detail


def test_delete_is_allowed_while_spawning():
    assert states.begin("delete", VmState.building, TaskState.spawning) == TaskState.deleting


def test_spawn_success_and_failure():
    ok = states.on_report(
        VmState.building,
        TaskState.spawning,
        InstanceReport(power_state=PowerState.running, task_done=TaskState.spawning),
    )
    assert (ok.vm_state, ok.task_state, ok.finished) == (VmState.active, None, TaskState.spawning)
    bad = states.on_report(
        VmState.building,
        TaskState.spawning,
        InstanceReport(
            power_state=PowerState.nostate, task_done=TaskState.spawning, error="no image"
        ),
    )
    assert bad.vm_state == VmState.error and bad.error == "no image"


def test_stale_report_only_updates_power():
    out = states.on_report(
        VmState.building,
        TaskState.deleting,
        InstanceReport(power_state=PowerState.running, task_done=TaskState.spawning),
    )
    assert (out.vm_state, out.task_state, out.finished) == (
        VmState.building,
        TaskState.deleting,
        None,
    )
    assert out.power_state == PowerState.running


def test_delete_finishes_when_gone():
    out = states.on_report(
        VmState.active,
        TaskState.deleting,
        InstanceReport(power_state=PowerState.nostate, gone=True),
    )
    assert out.vm_state == VmState.deleted and out.finished == TaskState.deleting
