"""The registry client's pure parts: what a pushed image is made of."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from dockyard.images import distribution, logins, registry
from dockyard.images.registry import Blob


def _tar(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("etc/hello")
        info.size = 2
        import io

        tar.addfile(info, io.BytesIO(b"hi"))
    return path


def test_layer_digest_is_stable_and_diff_id_is_the_plain_tar(tmp_path: Path) -> None:
    rootfs = _tar(tmp_path / "r.tar")
    first, diff_id = registry.compress_layer(rootfs, tmp_path / "a.gz")
    second, _ = registry.compress_layer(rootfs, tmp_path / "b.gz")
    assert first == second  # no name, no time in the gzip header: a re-push sends nothing
    assert diff_id == "sha256:" + hashlib.sha256(rootfs.read_bytes()).hexdigest()
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == rootfs.read_bytes()
    assert first.size == (tmp_path / "a.gz").stat().st_size


def test_config_and_manifest_name_each_other() -> None:
    config = registry.image_config(
        "sha256:" + "a" * 64, ["/sbin/init"], "2026-01-01T00:00:00Z", "amd64"
    )
    body = json.loads(config)
    assert body["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]}
    assert body["config"]["Cmd"] == ["/sbin/init"] and body["os"] == "linux"
    cfg_blob = Blob(registry.sha256_digest(config), len(config))
    man = json.loads(registry.manifest(cfg_blob, Blob("sha256:" + "b" * 64, 10)))
    assert man["schemaVersion"] == 2 and man["mediaType"] == registry.MANIFEST_V2
    assert man["config"]["digest"] == cfg_blob.digest
    assert man["layers"] == [
        {"mediaType": registry.LAYER_GZIP, "size": 10, "digest": "sha256:" + "b" * 64}
    ]


def test_no_cmd_means_the_config_has_none() -> None:
    body = json.loads(registry.image_config("sha256:" + "a" * 64, None, "t", "arm64"))
    assert body["config"] == {} and body["architecture"] == "arm64"


def test_pull_ref_is_host_port_repo_at_digest() -> None:
    d = "sha256:" + "c" * 64
    assert (
        registry.pull_ref("http://198.18.0.1:5000/", "dockyard/web", d)
        == f"198.18.0.1:5000/dockyard/web@{d}"
    )
    assert registry.pull_ref("https://reg.az1:443", "x", d) == f"reg.az1:443/x@{d}"


def test_config_renders_storage_delete_proxy_and_tls(tmp_path: Path) -> None:
    plain = json.loads(
        distribution.render_config(distribution.RegistryConfig(tmp_path, "127.0.0.1:5000"))
    )
    assert plain["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "data")
    assert plain["storage"]["delete"] == {"enabled": True}
    assert (
        plain["http"]["addr"] == "127.0.0.1:5000"
        and "proxy" not in plain
        and "tls" not in plain["http"]
    )
    cache = distribution.RegistryConfig(
        tmp_path,
        "198.18.0.1:5001",
        proxy_url="http://198.18.0.1:5000",
        tls_cert=tmp_path / "c",
        tls_key=tmp_path / "k",
    )
    body = json.loads(distribution.render_config(cache))
    assert body["proxy"] == {"remoteurl": "http://198.18.0.1:5000"}
    assert body["http"]["tls"] == {"certificate": str(tmp_path / "c"), "key": str(tmp_path / "k")}
    assert cache.url == "https://198.18.0.1:5001"


def test_config_with_logins_requires_htpasswd_and_a_cache_logs_in_as_the_hosts(
    tmp_path: Path,
) -> None:
    found = logins.ensure(tmp_path / "logins.json")
    assert (tmp_path / "logins.json").stat().st_mode & 0o777 == 0o600
    assert logins.ensure(tmp_path / "logins.json") == found  # made once
    primary = distribution.RegistryConfig(
        tmp_path / "p", "198.18.0.1:5000", logins=tmp_path / "logins.json"
    )
    body = json.loads(distribution.render_config(primary))
    assert body["auth"]["htpasswd"]["path"] == str(tmp_path / "p" / "htpasswd")
    assert "proxy" not in body
    cache = distribution.RegistryConfig(
        tmp_path / "c",
        "198.18.0.1:5001",
        proxy_url="https://198.18.0.1:5000",
        logins=tmp_path / "logins.json",
        upstream_ca=tmp_path / "ca.pem",
    )
    proxy = json.loads(distribution.render_config(cache))["proxy"]
    # Distribution 2.8 answers only a bearer challenge with proxy.username: the
    # login goes in the URL, which Go's client sends as Basic auth
    assert proxy == {
        "remoteurl": f"https://{logins.HOSTS}:{found.hosts.password}@198.18.0.1:5000",
    }


def test_htpasswd_entries_are_bcrypt_and_accept_only_the_right_password(tmp_path: Path) -> None:
    found = logins.ensure(tmp_path / "logins.json")
    text = logins.htpasswd(found)
    assert [line.split(":", 1)[0] for line in text.splitlines()] == [logins.SERVER, logins.HOSTS]
    assert all(line.split(":", 1)[1].startswith("$2") for line in text.splitlines())
    assert logins.check(text, found.server) and logins.check(text, found.hosts)
    assert not logins.check(text, logins.Login(logins.SERVER, found.hosts.password))
    assert found.server.password not in repr(found)  # never in a log line


def test_load_gives_back_what_start_wrote(tmp_path: Path) -> None:
    logins.ensure(tmp_path / "logins.json")
    cfg = distribution.RegistryConfig(
        tmp_path / "c",
        "198.18.0.1:5001",
        proxy_url="https://198.18.0.1:5000",
        tls_cert=tmp_path / "cert.pem",
        tls_key=tmp_path / "key.pem",
        logins=tmp_path / "logins.json",
        upstream_ca=tmp_path / "ca.pem",
    )
    distribution.write_files(cfg)
    assert distribution.load(cfg.root) == cfg
    for name in ("config.yml", "htpasswd", "dockyard.json"):
        assert (cfg.root / name).stat().st_mode & 0o777 == 0o600


def test_a_damaged_logins_file_says_which_file(tmp_path: Path) -> None:
    (tmp_path / "logins.json").write_text("{}")
    with pytest.raises(ValueError, match="logins.json: not a registry logins file"):
        logins.read(tmp_path / "logins.json")
