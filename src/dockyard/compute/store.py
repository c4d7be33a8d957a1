"""The agent's local disk: what it last knew it should run, and what it realised.

    STATE_DIR/
      desired.json              last desired state from the server (works offline)
      contact                   when the server last answered (wall clock, seconds)
      instances/<id>.json       Record: start time plumbed for, host veth, reboot seq
      instances/<id>/hosts      managed /etc/hosts, bind-mounted into the container
      instances/<id>/resolv.conf
      instances/<id>/counters.json  OOM/pids/throttle counters last reported
      instances/<id>/snapshot.json  the report of the last snapshot order carried out
      restoring/<volume id>     a volume being filled from a move's copy (a crash
                                half-way: the volume is made again)

With these the agent brings instances back after its own restart, a
container restart or a dockerd restart, without asking the server.
Writes are atomic (write to a temp file, rename).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dockyard.model import DesiredInstance, DesiredState, InstanceReport


@dataclass
class Record:
    instance_id: str
    plumbed_for: str = ""  # the container start time the veth was made for
    host_if: str = ""
    reboot_seq: int = 0
    applied: str = ""  # driver.resources_key of the limits in force
    applied_for: str = ""  # ... for this container start (cgroup-only limits reset on restart)
    snapshot_done: str = ""  # the last snapshot order carried out (its report: snapshot.json)
    fenced: bool = False  # power fenced carried out and reported
    files_for: str = ""  # the container (runtime id) its config files were written into
    rebuild_failed: int = -1  # the rebuild_seq whose failed pull was reported (not again)
    rebuild_refused: int = -1  # ... that failed for good: not tried again until it changes


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` whole. Threads may write the same file at once (the long poll
    and the heartbeat both note the server's answer): each writes its own temporary
    file, so one never renames the other's from under it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)  # ``mode`` from byte 1
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.instances = root / "instances"
        self.instances.mkdir(parents=True, exist_ok=True)
        self._counters: dict[str, dict[str, Any]] = {}  # id -> counters.json as last written

    def save_desired(self, state: DesiredState) -> None:
        # 0600: it holds the registry login the server hands the host
        _write(self.root / "desired.json", state.model_dump_json(), 0o600)

    def load_desired(self) -> DesiredState | None:
        path = self.root / "desired.json"
        if not path.exists():
            return None
        return DesiredState.model_validate_json(path.read_text())

    def heard_from_server(self, now: float) -> None:
        _write(self.root / "contact", f"{now:.3f}\n")

    def last_contact(self) -> float | None:
        """When the server last answered (``heard_from_server``); None if never."""
        try:
            return float((self.root / "contact").read_text())
        except (OSError, ValueError):
            return None

    def records(self) -> dict[str, Record]:
        out = {}
        for path in self.instances.glob("*.json"):
            try:
                out[path.stem] = Record(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                path.unlink()  # a torn file from a crash; re-plumbing rebuilds it
        return out

    def record(self, instance_id: str) -> Record:
        path = self.instances / f"{instance_id}.json"
        if path.exists():
            try:
                return Record(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                pass
        return Record(instance_id=instance_id)

    def save(self, rec: Record) -> None:
        _write(self.instances / f"{rec.instance_id}.json", json.dumps(asdict(rec)))

    def files_dir(self, instance_id: str) -> Path:
        return self.instances / instance_id

    def managed_files(self, instance_id: str) -> dict[str, Path]:
        """Where the managed files of an instance are: target in the container -> host path."""
        d = self.files_dir(instance_id)
        return {"/etc/hosts": d / "hosts", "/etc/resolv.conf": d / "resolv.conf"}

    def write_files(self, inst: DesiredInstance) -> dict[str, Path]:
        """The managed /etc/hosts and /etc/resolv.conf; returns target -> host path."""
        d = self.files_dir(inst.id)
        d.mkdir(exist_ok=True)
        hosts = (
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{inst.net.ip}\t{inst.hostname}\n"
        )
        resolv = "".join(f"nameserver {ip}\n" for ip in inst.net.dns) or "# no DNS servers\n"
        files = self.managed_files(inst.id)
        _write(files["/etc/hosts"], hosts)
        _write(files["/etc/resolv.conf"], resolv)
        return files

    def counters(self, instance_id: str, started_at: str) -> dict[str, int]:
        """The limit counters last reported for this container start ({} if none)."""
        saved = self._counters.get(instance_id)
        if saved is None:  # read once a run; every save goes through here
            try:
                saved = json.loads((self.files_dir(instance_id) / "counters.json").read_text())
            except (OSError, ValueError):
                saved = {}
            self._counters[instance_id] = saved
        return dict(saved["counters"]) if saved.get("started_at") == started_at else {}

    def save_counters(self, instance_id: str, started_at: str, counters: dict[str, int]) -> None:
        d = self.files_dir(instance_id)
        if d.is_dir():  # gone means deleted meanwhile: nothing to remember
            saved = {"started_at": started_at, "counters": counters}
            _write(d / "counters.json", json.dumps(saved))
            self._counters[instance_id] = saved

    def save_snapshot(self, instance_id: str, order_id: str, report: InstanceReport) -> None:
        """Remember how order ``order_id`` ended, so it is reported again, never redone."""
        d = self.files_dir(instance_id)
        d.mkdir(exist_ok=True)
        body = {"order": order_id, "report": report.model_dump(mode="json")}
        _write(d / "snapshot.json", json.dumps(body))

    def snapshot(self, instance_id: str, order_id: str) -> InstanceReport | None:
        """The report of order ``order_id`` if this host finished it, else None."""
        try:
            body = json.loads((self.files_dir(instance_id) / "snapshot.json").read_text())
        except (OSError, ValueError):
            return None
        if body.get("order") != order_id:
            return None
        return InstanceReport.model_validate(body["report"])

    def restoring(self, volume_id: str) -> Path:
        """The marker of a volume being filled from a copy (exists only meanwhile)."""
        d = self.root / "restoring"
        d.mkdir(exist_ok=True)
        return d / volume_id

    def forget(self, instance_id: str) -> None:
        """After: nothing of the instance is left on disk."""
        self._counters.pop(instance_id, None)
        (self.instances / f"{instance_id}.json").unlink(missing_ok=True)
        shutil.rmtree(self.files_dir(instance_id), ignore_errors=True)

    def known_ids(self) -> set[str]:
        ids = {p.stem for p in self.instances.glob("*.json")}
        return ids | {p.name for p in self.instances.iterdir() if p.is_dir()}
