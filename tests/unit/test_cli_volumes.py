"""The CLI tells a named volume from a host path by a leading '/', and reads sizes."""

import pytest

from dockyard.cli.client import CliError
from dockyard.cli.servers import _volumes
from dockyard.cli.volumes import size_mb


def test_a_leading_slash_is_a_host_path_anything_else_a_volume_name():
    assert _volumes(["data:/data:ro", "/srv/x:/x"]) == [
        {"volume": "data", "path": "/data", "read_only": True},
        {"host_path": "/srv/x", "path": "/x", "read_only": False},
    ]
    with pytest.raises(CliError, match="NAME:PATH"):
        _volumes(["data"])


def test_sizes_are_whole_megabytes():
    assert size_mb("1GB") == 1024 and size_mb("64MB") == 64
    with pytest.raises(CliError, match="whole megabytes"):
        size_mb("1500KB")
    with pytest.raises(CliError, match="size"):
        size_mb("lots")
