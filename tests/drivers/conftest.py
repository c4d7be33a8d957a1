"""The fake Engine API (fake_engine.py) as a fixture for the driver's tests."""

from __future__ import annotations

import docker
import pytest

from tests.drivers.fake_engine import EngineAPI


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> EngineAPI:
    api = EngineAPI()
    monkeypatch.setattr(docker, "DockerClient", lambda **kw: type("Client", (), {"api": api})())
    return api
