"""images/registry.py against a real docker-registry: push, read, list, delete, GC."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.errors import PermanentError, TemporaryError
from dockyard.images import distribution
from dockyard.images.registry import Registry
from tests.registry.util import free_port, rootfs

NOW = "2026-11-26T00:00:00Z"


def test_push_then_tag_names_the_digest_and_catalog_lists_it(
    primary: distribution.RegistryConfig, tmp_path: Path
) -> None:
    tar = rootfs(tmp_path / "r.tar")
    with Registry(primary.url) as reg:
        pushed = reg.push_rootfs("dockyard/web", "v1", tar, ["/sbin/init"], NOW)
        assert pushed.digest.startswith("sha256:")
        assert reg.manifest_digest("dockyard/web", "v1") == pushed.digest
        assert reg.manifest_digest("dockyard/web", "nope") is None
        assert reg.repositories() == ["dockyard/web"]
        assert reg.tags("dockyard/web") == ["v1"]
        [listed] = reg.images()
        assert (listed.repository, listed.tag, listed.digest) == (
            "dockyard/web",
            "v1",
            pushed.digest,
        )
        assert listed.size == pushed.size and listed.pushed == NOW


def test_a_second_push_of_the_same_rootfs_gives_the_same_digest(
    primary: distribution.RegistryConfig, tmp_path: Path
) -> None:
    tar = rootfs(tmp_path / "r.tar")
    with Registry(primary.url) as reg:
        a = reg.push_rootfs("dockyard/a", "1", tar, None, NOW)
        b = reg.push_rootfs("dockyard/a", "2", tar, None, NOW)
        assert a.digest == b.digest and reg.tags("dockyard/a") == ["1", "2"]


def test_delete_removes_the_manifest_and_gc_reclaims_the_blobs(
    primary: distribution.RegistryConfig, tmp_path: Path
) -> None:
    tar = rootfs(tmp_path / "r.tar", size=4 << 20)
    data = primary.root / "data"
    with Registry(primary.url) as reg:
        pushed = reg.push_rootfs("dockyard/gone", "v1", tar, None, NOW)
        before = _bytes_under(data)
        assert reg.delete("dockyard/gone", pushed.digest) is True
        assert reg.manifest_digest("dockyard/gone", "v1") is None
        assert reg.delete("dockyard/gone", pushed.digest) is False  # already gone
    distribution.garbage_collect(primary)
    after = _bytes_under(data)
    assert before > 4 << 20 and after < 1 << 20, (before, after)
    with Registry(primary.url) as reg:  # it serves again after the collection
        assert reg.push_rootfs("dockyard/again", "v1", rootfs(tmp_path / "s.tar"), None, NOW)


def test_a_cache_serves_what_the_primary_holds(
    primary: distribution.RegistryConfig, cache: distribution.RegistryConfig, tmp_path: Path
) -> None:
    with Registry(primary.url) as reg:
        pushed = reg.push_rootfs("dockyard/web", "v1", rootfs(tmp_path / "r.tar"), None, NOW)
    with Registry(cache.url) as reg:
        assert reg.manifest_digest("dockyard/web", "v1") == pushed.digest


def test_unreachable_is_temporary_and_a_refusal_is_permanent(
    primary: distribution.RegistryConfig,
) -> None:
    with Registry(f"http://127.0.0.1:{free_port()}") as reg, pytest.raises(TemporaryError):
        reg.repositories()
    with Registry(primary.url) as reg, pytest.raises(PermanentError, match="400|404"):
        reg.delete("dockyard/x", "sha256:nothex")


def _bytes_under(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
