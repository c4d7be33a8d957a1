"""A dockerd that does not answer within the client's timeout (a wedged one) is
"dockerd is not answering", a TemporaryError, and shows as down in the agent's metrics."""

from __future__ import annotations

import pytest

from dockyard.errors import TemporaryError
from tests.drivers.fake_engine import EngineAPI, driver


def test_a_dockerd_that_does_not_answer_in_time_is_down_not_a_crash(engine: EngineAPI) -> None:
    engine.answers = False
    with pytest.raises(TemporaryError, match="dockerd is not answering"):
        driver().info()


def test_a_wedged_dockerd_shows_as_down_in_the_agents_metrics(
    engine: EngineAPI, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dockyard_dockerd_up (alert DockyardDockerdDown) goes to 0 once dockerd's info
    times out, rather than keep the last 1 while the sampler fails."""
    from dockyard.compute import metrics

    monkeypatch.setattr(metrics, "DOCKERD_SECONDS", 0.0)
    sampler = metrics.Sampler(driver(), None, None, lambda iid: tmp_path, proc=tmp_path)  # type: ignore[arg-type]
    sampler.sample({}, [])
    assert sampler.latest.host.dockerd_up
    engine.answers = False
    sampler.sample({}, [])
    assert not sampler.latest.host.dockerd_up
