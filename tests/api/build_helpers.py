"""The PaaS cloud of paas_helpers plus a primary registry's settings, a build host and
signed git deliveries, for the builds' API and CLI tests."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from dockyard.api.app import create_app
from dockyard.api.registry import RegistrySettings
from dockyard.api.server import init
from dockyard.db.builds import Limits
from tests.api.conftest import _database
from tests.api.paas_helpers import Paas

SECRET = "s3cret-s3cret-s3cret"
REPO = "https://git.example/shop/web.git"
SHA = "0123456789abcdef0123456789abcdef01234567"
REGISTRY = "http://127.0.0.1:5999"


class Builds(Paas):
    """``Paas`` with a build host ``b1`` (``builds`` its agent's token) and a 1-replica
    stack shop/web, its creation settled."""

    def setup(self):
        super().setup()
        self.builder = self.register("b1", labels={"dockyard.builds": "2,3"})
        self.agents["b1"] = self.builder  # it may run instances too
        assert self.stack(replicas=1).status_code == 201
        self.settle()
        self.step()

    def hook(self, **kw):
        body = {"repo": REPO, "branch": "main", "stack": "web", "secret": SECRET, **kw}
        return self.ok("POST", "/apps/shop/hooks", json=body)

    def push(self, payload=None, secret=SECRET, app="shop", style="github", event=None, raw=None):
        """A git host's delivery, signed with ``secret`` (None: unsigned)."""
        body = raw if raw is not None else json.dumps(payload or push_payload()).encode()
        headers = {"content-type": "application/json"}
        if style == "github":
            headers["x-github-event"] = event or "push"
            if secret is not None:
                mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                headers["x-hub-signature-256"] = "sha256=" + mac
        else:
            headers["x-gitlab-event"] = event or "Push Hook"
            if secret is not None:
                headers["x-gitlab-token"] = secret
        return self.client.post(f"/v1/apps/{app}/hooks/git", content=body, headers=headers)

    def orders(self, host="b1", token=None, **params):
        token = token or (self.builder if host == "b1" else self.agents[host])
        return self.ok("GET", f"/agent/hosts/{host}/builds", token, params=params)

    def agent(self, method, build_id, verb, **kw):
        return self.call(method, f"/agent/builds/{build_id}/{verb}", self.builder, **kw)

    def builds(self):
        return self.ok("GET", "/builds")

    def tick(self, seconds=0.0):
        """One pass of the build controller, ``seconds`` later on the test's clock."""
        self.clock += timedelta(seconds=seconds)
        return self.client.app.state.build_controller.step(self.clock)


def push_payload(branch="main", after=SHA, pusher="dana"):
    return {
        "ref": f"refs/heads/{branch}",
        "after": after,
        "pusher": {"name": pusher},
        "repository": {"clone_url": "https://evil.example/x.git"},
    }


def done_body(commit=SHA, tag="20261126-0123456"):
    return {"commit": commit, "tag": tag, "digest": "sha256:" + "ab" * 32, "size": 1234,
            "seconds": {"clone": 1.5, "build": 20.0, "push": 3.0}}  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cloud(request, tmp_path):
    db, drop = _database(tmp_path, request.param)
    token = init(db)
    app = create_app(
        db,
        tmp_path,
        registry=RegistrySettings(url=REGISTRY),
        deploy_check_every=None,
        build_check_every=None,
        build_limits=Limits(memory_mb=1024, timeout_seconds=600),
    )
    with TestClient(app) as client:
        c = Builds(client, token)
        c.setup()
        yield c
    db.engine.dispose()
    if drop:
        drop()
