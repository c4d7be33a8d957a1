"""A server upgraded before its agents: the agent reads the server's words with the
fields it knows and drops the rest, at every depth, so it keeps working; a user's
request with an unknown field is still refused."""

from __future__ import annotations

import pydantic
import pytest

from dockyard import model
from tests.unit.fakehost import instance, new_id


def _from_a_newer_server() -> dict:
    state = model.DesiredState(generation=7, instances=[instance(new_id())]).model_dump(mode="json")
    state["rollout_hint"] = "canary"  # top level
    state["volumes"] = [{"id": "v1", "size_mb": 1024, "thin": True}]  # list[M] | None
    inst = state["instances"][0]
    inst["image_pull_mirror"] = "az9"  # an instance
    inst["net"]["vlan"] = 42  # a nested model
    inst["limits"]["net_priority"] = 3  # another nested model
    return state


def test_the_agent_reads_a_newer_servers_desired_state():
    data = _from_a_newer_server()
    state = model.from_newer(model.DesiredState, data)
    assert state.generation == 7
    assert state.instances[0].net.ip == data["instances"][0]["net"]["ip"]
    assert state.instances[0].limits == model.Limits()
    assert [v.id for v in state.volumes or []] == ["v1"]


def test_what_it_knows_is_still_checked():
    data = _from_a_newer_server()
    data["instances"][0]["memory_mb"] = "lots"
    with pytest.raises(pydantic.ValidationError, match="memory_mb"):
        model.from_newer(model.DesiredState, data)


def test_a_users_request_with_an_unknown_field_is_refused():
    with pytest.raises(pydantic.ValidationError, match="colour"):
        model.FlavorCreate.model_validate(
            {"name": "f", "vcpus": 1, "memory_mb": 64, "colour": "red"}
        )


def test_a_same_version_servers_state_reads_as_sent():
    """The common case skips the dropping walk (validated once); it reads the same."""
    sent = model.DesiredState(generation=3, instances=[instance(new_id())])
    assert model.from_newer(model.DesiredState, sent.model_dump(mode="json")) == sent
    data = sent.model_dump(mode="json")
    data["instances"][0]["memory_mb"] = "lots"  # nothing unknown, something wrong
    with pytest.raises(pydantic.ValidationError, match="memory_mb"):
        model.from_newer(model.DesiredState, data)
