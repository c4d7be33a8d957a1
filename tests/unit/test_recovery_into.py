"""``server recover --into`` on the agent side (compute/recovery.py): the recovered tar
is renamed under the target directory, its sha256 checked, written through FilesInto,
and a refusal goes back to the server with why; the CLI refuses host paths."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from dockyard import model
from dockyard.cli.client import CliError
from dockyard.cli.recovery import into
from dockyard.compute.recovery import Recoverer, Refused, under
from dockyard.errors import TemporaryError
from tests.unit.test_recovery import NoVolumes


def _tar(entries: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, body in entries.items():
            info = tarfile.TarInfo(name)
            if body is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def _names(data: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m.linkname for m in tar.getmembers()}


def test_entries_move_under_the_target_directory_with_their_hard_links():
    data = _tar({"work": None, "work/a.bin": b"abc"}, links={"work/b.bin": "work/a.bin"})
    moved, top = under(data, "/srv/restored")
    assert top == "/srv/restored/work"
    assert _names(moved) == {
        "srv/restored/work": "",
        "srv/restored/work/a.bin": "",
        "srv/restored/work/b.bin": "srv/restored/work/a.bin",
    }
    moved, top = under(_tar({"notes": b"x"}), "/")
    assert (top, list(_names(moved))) == ("/notes", ["notes"])


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/../../x"])
def test_a_tar_entry_that_climbs_out_is_refused(bad):
    with pytest.raises(Refused):
        under(_tar({bad: b"x"}), "/root")


class Server:
    def __init__(self, data: bytes) -> None:
        self.data, self.done, self.failures = data, [], {}

    def recovered_data(self, order_id):
        return self.data

    def delivered(self, order_id):
        self.done.append(order_id)

    def fail_recovery(self, order_id, error):
        self.failures[order_id] = error


class Files:
    def __init__(self, there: set[str] = frozenset()) -> None:
        self.there, self.put_calls = there, []

    def put(self, instance_id, tar, top):
        if top in self.there:
            raise Refused(f"{top} already exists in the instance")
        self.put_calls.append((instance_id, _names(tar), top))


def _order(data: bytes, oid="d1") -> model.RecoveryDelivery:
    return model.RecoveryDelivery(
        id=oid, instance_id="i2", path="/root/in", sha256=hashlib.sha256(data).hexdigest()
    )


def _recoverer(tmp_path, server, files):
    return Recoverer(server, tmp_path, "h2", NoVolumes(), lambda: "/x", lambda: files)


def test_a_delivery_is_written_then_reported(tmp_path):
    data = _tar({"notes": b"kept"})
    server, files = Server(data), Files()
    _recoverer(tmp_path, server, files).deliver(_order(data))
    assert files.put_calls == [("i2", {"root/in/notes": ""}, "/root/in/notes")]
    assert server.done == ["d1"] and server.failures == {}


def test_a_damaged_tar_or_an_existing_file_is_refused_and_told(tmp_path):
    data = _tar({"notes": b"kept"})
    server = Server(data + b"garbage")
    _recoverer(tmp_path, server, Files()).deliver(_order(data))
    assert "damaged" in server.failures["d1"]
    server = Server(data)
    _recoverer(tmp_path, server, Files({"/root/in/notes"})).deliver(_order(data))
    assert "already exists" in server.failures["d1"] and server.done == []


def test_with_dockerd_down_the_delivery_waits_for_the_next_poll(tmp_path):
    data = _tar({"notes": b"kept"})
    server = Server(data)

    def down():
        raise TemporaryError("dockerd has not answered since the agent started")

    rec = Recoverer(server, tmp_path, "h2", NoVolumes(), lambda: "/x", down)
    rec.deliver(_order(data))
    assert server.failures == {} and server.done == [] and "d1" not in rec._done


@pytest.mark.parametrize("spec", ["/var/tmp", "web2", ":/root", "web2:root", "/a:/b", "h1:"])
def test_the_cli_refuses_anything_but_instance_colon_absolute_path(spec):
    with pytest.raises(CliError, match="INSTANCE:PATH"):
        into(spec)
    assert into("web2:/root/in") == {"instance": "web2", "path": "/root/in"}
