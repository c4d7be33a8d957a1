"""A named volume's data moved between two hosts' volume stores through a real registry
(TLS, logins required; on loopback unverified, as dockerd does): what arrives is what
left, proven by the checksum; a copy whose checksum does not match is refused."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.compute.transfer import RegistryTransfer, tree_checksum
from dockyard.compute.volumes import LoopVolumes
from dockyard.errors import PermanentError
from dockyard.images import distribution, logins
from dockyard.model import RegistryLogin, VolumeCopy
from tests.registry.util import secured_registry

pytestmark = pytest.mark.root
VOL = "6a1f0c2e-5d4b-4a39-8e27-1c0b9f8e7d6c"


@pytest.fixture(scope="module")
def registry() -> Iterator[tuple[distribution.RegistryConfig, RegistryLogin, Path]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, owners)")
    if shutil.which(distribution.PROGRAM) is None:
        pytest.fail("docker-registry is not installed; apt-get install docker-registry")
    root = Path(tempfile.mkdtemp(prefix="dyk-transfer-"))
    try:
        with secured_registry(root) as (cfg, _):
            assert cfg.logins is not None
            found = logins.read(cfg.logins).hosts
            login = RegistryLogin(username=found.username, password=found.password)
            yield cfg, login, root / "tls" / "ca.pem"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hosts(tmp_path) -> Iterator[tuple[LoopVolumes, LoopVolumes]]:
    source, target = LoopVolumes(tmp_path / "a"), LoopVolumes(tmp_path / "b")
    yield source, target
    source.remove(VOL)
    target.remove(VOL)


def test_a_volume_moves_through_the_registry_with_owners_modes_links_and_bytes(
    registry, hosts
):
    cfg, login, ca = registry
    source, target = hosts
    data = Path(source.attach(VOL, 64))
    (data / "db").mkdir()
    (data / "db" / "rows").write_bytes(os.urandom(3 << 20))
    os.chown(data / "db", 999, 999)
    os.chmod(data / "db", 0o750)
    os.symlink("db/rows", data / "current")
    transfer = RegistryTransfer(verify=str(ca))

    copy = transfer.push_volume(data, f"{cfg.addr}/snapshots/vm-volumes/{VOL}", "m1", login)
    assert copy.pull.startswith(f"{cfg.addr}/snapshots/vm-volumes/{VOL}@sha256:")
    again = transfer.push_volume(data, f"{cfg.addr}/snapshots/vm-volumes/{VOL}", "m1", login)
    assert again == copy  # the same data: the same digest
    assert transfer.stored_size(copy.pull, login) > 3 << 20  # random bytes do not shrink

    restored = Path(target.attach(VOL, 64))
    transfer.restore_volume(copy, restored, login)
    assert tree_checksum(restored) == copy.checksum == tree_checksum(data)
    assert (restored / "db" / "rows").read_bytes() == (data / "db" / "rows").read_bytes()
    assert os.readlink(restored / "current") == "db/rows"
    assert os.stat(restored / "db").st_uid == 999


def test_a_copy_whose_checksum_does_not_match_is_refused(registry, hosts):
    cfg, login, ca = registry
    source, target = hosts
    data = Path(source.attach(VOL, 16))
    (data / "f").write_text("one\n")
    transfer = RegistryTransfer(verify=str(ca))
    copy = transfer.push_volume(data, f"{cfg.addr}/snapshots/bad-volumes/{VOL}", "m2", login)
    lying = VolumeCopy(pull=copy.pull, checksum="sha256:" + "0" * 64)

    with pytest.raises(PermanentError, match="does not match its checksum"):
        transfer.restore_volume(lying, Path(target.attach(VOL, 16)), login)


def test_a_copy_the_registry_does_not_have_is_refused(registry, hosts):
    cfg, login, ca = registry
    _, target = hosts
    missing = VolumeCopy(
        pull=f"{cfg.addr}/snapshots/none-volumes/{VOL}@sha256:{'1' * 64}",
        checksum="sha256:" + "0" * 64,
    )
    with pytest.raises(PermanentError):
        RegistryTransfer(verify=str(ca)).restore_volume(
            missing, Path(target.attach(VOL, 16)), login
        )



def test_an_overlay_upper_dir_packs_as_an_image_layer_with_its_whiteouts(tmp_path):
    """What the layer path of a migration sends instead of a commit: deletions and
    directories made again reach the target as Docker's .wh. markers, not as device
    files or lost attributes."""
    if os.geteuid() != 0:
        pytest.skip("needs root (whiteout devices, trusted.* attributes)")
    import tarfile

    from dockyard.compute.transfer import pack_layer

    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc" / "group", 0o600 | stat.S_IFCHR, os.makedev(0, 0))  # rm /etc/group
    (upper / "var").mkdir()
    os.setxattr(upper / "var", "trusted.overlay.opaque", b"y")  # rm -rf /var; mkdir /var
    (upper / "var" / "n").write_text("n")
    (upper / "root").mkdir()
    (upper / "root" / "f").write_text("moved")
    os.link(upper / "root" / "f", upper / "root" / "g")
    (upper / "run").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:  # supervisord's, mysqld's ... left behind
        sock.bind(str(upper / "run" / "app.sock"))
    layer = tmp_path / "layer.tar"

    pack_layer(upper, layer)

    with tarfile.open(layer) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {
            "etc", "etc/.wh.group", "var", "var/.wh..wh..opq", "var/n", "root", "root/f",
            "root/g", "run",
        }  # fmt: skip (the socket stays behind, as with docker commit)
        assert members["etc/.wh.group"].isreg() and members["etc/.wh.group"].size == 0
        assert members["root/g"].islnk() and members["root/g"].linkname == "root/f"
        assert not any("trusted." in k for m in members.values() for k in m.pax_headers)


def test_an_upper_dir_that_keeps_data_in_a_lower_layer_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (trusted.* attributes)")
    from dockyard.compute.transfer import pack_layer

    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "big").write_bytes(b"")
    os.setxattr(upper / "big", "trusted.overlay.metacopy", b"")  # its bytes are below
    with pytest.raises(PermanentError, match="lower layer"):
        pack_layer(upper, tmp_path / "layer.tar")
