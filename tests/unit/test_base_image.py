"""The Dockyard layer of a base image, written over a small stand-in for the
Debian tarball (mmdebstrap itself runs in tests/integration/test_base_image.py)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from dockyard.errors import BadRequest
from dockyard.images import base


def _debian(path):
    with tarfile.open(path, "w") as tar:
        for name, data in (
            ("./etc/rsyslog.conf", b'x\nmodule(load="imuxsock")\nmodule(load="imklog")\n'),
            ("./etc/supervisor/conf.d/dockyard.conf", b"old"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_layer_runs_supervisord_with_the_key_processes(tmp_path):
    recipe = base.Recipe(
        "app", programs={"web": "/usr/bin/python3 -m http.server", "stamp": "date +%s"}
    )
    out = tmp_path / "image.tar"
    base._write_image(_debian(tmp_path / "debian.tar"), base._layer_files(recipe), out)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        conf = tar.extractfile("./etc/supervisor/conf.d/dockyard.conf").read().decode()
        rsyslog = tar.extractfile("./etc/rsyslog.conf").read().decode()
        meta = json.loads(tar.extractfile("./etc/dockyard/image.json").read())
        ssh_dir = tar.getmember("./root/.ssh")
        free = tar.getmember("./usr/local/bin/free")
    assert names.count("./etc/supervisor/conf.d/dockyard.conf") == 1  # replaced, not doubled
    for program in ("sshd", "cron", "rsyslog", "web"):
        assert f"[program:{program}]" in conf
    assert '#module(load="imklog")' in rsyslog and '\nmodule(load="imuxsock")' in rsyslog
    assert "command=date +%%s" in conf  # supervisord would expand a bare %
    assert meta["key_processes"] == ["sshd", "cron", "rsyslog", "web", "stamp"]
    assert ssh_dir.isdir() and ssh_dir.mode == 0o700 and free.mode == 0o755
    for module in ("cgroups/__init__.py", "procview/render.py", "tools/free.py", "tools/top.py"):
        assert f"./usr/local/lib/dockyard/dockyard/{module}" in names
    assert "./usr/local/lib/dockyard" in names  # parents exist before their files
    assert names.index("./usr/local/lib/dockyard") < names.index(
        "./usr/local/lib/dockyard/dockyard/__init__.py"
    )


def test_cache_keys_follow_the_recipe():
    a, b = base.Recipe("x"), base.Recipe("x", packages=("vim",))
    assert base._debian_key(a) == base._debian_key(base.Recipe("y"))  # the name is not Debian's
    assert base._debian_key(a) != base._debian_key(b)
    assert "vim" in b.all_packages() and "openssh-server" in b.all_packages()


def test_program_specs_are_checked():
    assert base.parse_program("web=/bin/app --port 80") == ("web", "/bin/app --port 80")
    for bad in ("web", "=cmd", "bad name=cmd", "web= "):
        with pytest.raises(BadRequest, match="NAME=COMMAND"):
            base.parse_program(bad)
    with pytest.raises(BadRequest, match="already runs sshd"):
        base.parse_program("sshd=/usr/sbin/sshd")
