"""Nova's instance state model: vm_state, task_state, power_state.

Pure functions only. The server calls :func:`begin` when a user asks for an
action and :func:`on_report` when the agent says what it did or saw.

    action   allowed from (vm_state, task_state)        task set
    start    (stopped, None) | (error, None)+host        powering-on
    stop     (active, None)                             powering-off
    reboot   (active, None)                             rebooting
    resize   (active, None)                             resizing (live; vm_state stays)
    rebuild  (active, None) | (stopped, None)           rebuilding (vm_state stays)
    delete   anything not already deleting             deleting
"""

from __future__ import annotations

from dataclasses import dataclass

from dockyard.errors import Conflict
from dockyard.model import InstanceReport, PowerState, TaskState, VmState

_STATUS = {
    VmState.building: "BUILD",
    VmState.active: "ACTIVE",
    VmState.stopped: "SHUTOFF",
    VmState.error: "ERROR",
    VmState.deleted: "DELETED",
}
_TASK_STATUS = {
    TaskState.rebooting: "REBOOT",
    TaskState.deleting: "DELETING",
    TaskState.rebuilding: "REBUILD",
}


def status(vm: VmState, task: TaskState | None) -> str:
    """The one word the console shows, as Nova's API derives it."""
    if task in _TASK_STATUS:
        return _TASK_STATUS[task]
    return _STATUS[vm]


_ALLOWED: dict[str, tuple[set[VmState], TaskState]] = {
    "start": ({VmState.stopped}, TaskState.powering_on),
    "stop": ({VmState.active}, TaskState.powering_off),
    "reboot": ({VmState.active}, TaskState.rebooting),
    "resize": ({VmState.active}, TaskState.resizing),
    "rebuild": ({VmState.active, VmState.stopped}, TaskState.rebuilding),
}


def begin(action: str, vm: VmState, task: TaskState | None) -> TaskState:
    """Return the task_state an action sets, or raise Conflict saying why not."""
    if action == "delete":
        if task == TaskState.deleting:
            raise Conflict("the instance is already being deleted; wait for it to go")
        return TaskState.deleting
    allowed, new_task = _ALLOWED[action]
    if task is not None:
        raise Conflict(
            f"cannot {action} while the instance is {task.value}; wait for that task to finish"
        )
    if vm not in allowed:
        states = ", ".join(sorted(s.value for s in allowed))
        raise Conflict(f"cannot {action} an instance in vm_state {vm.value}; it must be {states}")
    return new_task


@dataclass(frozen=True)
class Outcome:
    vm_state: VmState
    task_state: TaskState | None
    power_state: PowerState
    finished: TaskState | None = None  # the task whose action log entry ends now
    error: str | None = None


_DONE_VM = {
    TaskState.spawning: VmState.active,
    TaskState.powering_on: VmState.active,
    TaskState.rebooting: VmState.active,
    TaskState.powering_off: VmState.stopped,
    TaskState.deleting: VmState.deleted,
}


def on_report(vm: VmState, task: TaskState | None, report: InstanceReport) -> Outcome:
    """Fold an agent's report into the instance's states.

    A report for a task that is no longer current (the user deleted the
    instance while it spawned) only updates power_state.
    """
    if report.gone and task == TaskState.deleting:
        return Outcome(VmState.deleted, None, PowerState.nostate, finished=task)
    if report.error and report.task_done is not None and report.task_done == task:
        if task == TaskState.spawning:
            return Outcome(VmState.error, None, report.power_state, task, report.error)
        # a failed stop/start/reboot leaves the instance as it is, in its true power state
        return Outcome(vm, None, report.power_state, task, report.error)
    if report.task_done is not None and report.task_done == task:
        return Outcome(_DONE_VM.get(task, vm), None, report.power_state, finished=task)
    return Outcome(vm, task, report.power_state)
