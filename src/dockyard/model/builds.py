"""Continuous integration: git hooks, builds, and the build orders an agent carries out.

    git push ──► POST /v1/apps/APP/hooks/git (X-Hub-Signature-256 or X-Gitlab-Token)
                 verified against the app's hooks' secrets (none verifies: 401, nothing starts)
                 a hook following the pushed branch: a Build, queued (none follows: 202, ignored)
    server   ──► the build's host: an up host whose agent runs with --builds (label
                 dockyard.builds = the cores it builds on: its reserved cores); one build at a
                 time per host; a BuildOrder in that host's long poll
                 GET /v1/agent/hosts/NAME/builds
    agent    ──► POST /v1/agent/builds/ID/start, clone REPO, check out the commit, build the
                 Dockerfile with dockerd's classic builder under the order's limits (BuildKit
                 ignores per-build CPU and memory limits), tag REPO:YYYYMMDD-<sha7>, push;
                 the log as it comes: POST /v1/agent/builds/ID/log?offset=N (text/plain);
                 then POST .../done (BuildDone) or .../failure (BuildFailure)
    server   ──► an image APP-YYYYMMDD-<sha7> in the app's project (its registry tag
                 PROJECT/APP:YYYYMMDD-<sha7>, as the seed's eless/tesla:20151124); with
                 auto_deploy a deploy of the hook's stack to it

A build's order leaves the host's poll when the build is cancelled or times out: the
agent stops what it was doing for it and reports nothing more.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from dockyard.model.base import Name, Schema
from dockyard.model.registry import RegistryLogin

BUILDS_LABEL = "dockyard.builds"  # a build host's label: the cores its builds run on
BUILD_LOG_MAX = 4 << 20  # bytes of one build's log kept; beyond it the log says it was cut
BUILD_TIMEOUT_DEFAULT = 1800  # seconds from the agent's start to its push
HOOK_SECRET_MIN = 16

def _no_secret_in_url(value: str) -> str:
    """A URL is shown to everyone who can read the app (readers too) and to its build
    logs: no password or token in it; ssh's user name alone (git@host) is no secret."""
    userinfo = urlsplit(value).netloc.rpartition("@")[0]
    if userinfo and (":" in userinfo or not value.startswith("ssh://")):
        raise ValueError(
            "put no credentials in the repository URL (every reader of the app sees it); "
            "builds clone public repositories, or ssh:// URLs with a user name only"
        )
    return value


GitUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        pattern=r"^(https?|git|ssh)://[^\s\x00]+$",
        description="what the build host clones: https://, http://, git:// or ssh:// "
        "(never a path on the build host; no credentials in it)",
    ),
    AfterValidator(_no_secret_in_url),
]
def _ref(value: str) -> str:
    if ".." in value or value.startswith(("-", "/")) or value.endswith(("/", ".lock")):
        raise ValueError("a git ref has no '..', does not start with '-' or '/', "
                         "and does not end with '/' or '.lock'")  # fmt: skip
    return value


def _inside(value: str) -> str:
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError("a path inside the repository: relative, without '..'")
    return value


GitRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="a branch, a tag or a commit",
    ),
    AfterValidator(_ref),
]
Sha = Annotated[str, Field(pattern=r"^[0-9a-f]{40}$", description="a full git commit id")]
RelPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="a path inside the repository",
    ),
    AfterValidator(_inside),
]


class BuildStatus(StrEnum):
    queued = "queued"  # waiting for a build host
    running = "running"  # its agent started it: cloning, building or pushing
    succeeded = "succeeded"  # pushed; the image exists
    failed = "failed"  # the clone, the build or the push failed, or it timed out
    cancelled = "cancelled"


def _branch(value: str) -> str:
    if re.fullmatch(r"[0-9a-f]{40}", value):
        raise ValueError(
            "a 40-hex name reads as a commit id (a build of such a commit would skip the "
            "check that it is on the branch): follow a branch with another name"
        )
    return value


Branch = Annotated[GitRef, AfterValidator(_branch)]


class HookCreate(Schema):
    repo: GitUrl
    branch: Branch
    stack: Name = Field(description="the app's stack a build of this branch deploys to")
    auto_deploy: bool = Field(default=False, description="deploy each successful build")
    secret: str | None = Field(
        default=None,
        min_length=HOOK_SECRET_MIN,
        max_length=256,
        description="the shared secret of the HMAC (GitHub) or the token (GitLab); "
        "None: the server makes one and shows it once, in this request's answer",
    )
    dockerfile: RelPath = "Dockerfile"


class Hook(Schema):
    id: str
    app: str
    repo: str
    branch: str
    stack: str
    auto_deploy: bool
    dockerfile: str
    url: str = Field(description="where the git host posts: /v1/apps/APP/hooks/git")
    secret: str | None = Field(default=None, description="only in the answer to its creation")
    created_by: str
    created_at: datetime


class PushAccepted(Schema):
    """The webhook's answer (202): the builds the push started, or why none."""

    builds: list[str] = Field(description="ids of the builds started")
    ignored: str | None = Field(default=None, description="why nothing started")


class BuildStart(Schema):
    ref: GitRef = Field(
        description="a branch or a tag: built as it is when the build host fetches it; a "
        "40-hex commit id: built as a push of it to the hook's branch (refused unless it is "
        "on that branch)"
    )
    hook: str | None = Field(
        default=None, max_length=36, description="the hook's id; None: the app's only hook"
    )
    deploy: bool | None = Field(default=None, description="None: as the hook's auto_deploy")


class Build(Schema):
    id: str
    app: str
    project: str
    hook: str | None
    repo: str
    ref: str
    commit: str | None = Field(description="known once the push named it or the agent cloned")
    stack: str | None
    auto_deploy: bool
    status: BuildStatus
    reason: str | None = Field(default=None, description="why it waits, failed or was cancelled")
    host: str | None
    image: str | None = Field(description="the image it made: APP-YYYYMMDD-<sha7>")
    tag: str | None = Field(description="its registry ref: PROJECT/APP:YYYYMMDD-<sha7>")
    digest: str | None
    deploy: str | None = Field(default=None, description="the deploy it started")
    trigger: str = Field(description="push or manual")
    created_by: str = Field(description="who pushed (as the git host said) or started it")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: dict[str, float] = Field(default={}, description="clone, build, push")


class BuildLog(Schema):
    """GET /v1/builds/ID/log?offset=N[&wait=S]: the log from byte N on (a long poll with
    ``wait`` while nothing new has come and the build runs)."""

    text: str
    offset: int = Field(description="where the next read starts")
    done: bool = Field(description="the build has finished and this is all of its log")
    truncated: bool = False


class BuildOrder(Schema):
    """For a build host's agent. Carried out once per id; an order gone from the poll
    is stopped."""

    id: str = Field(max_length=36)
    repo: str = Field(max_length=1024)
    ref: str = Field(
        max_length=255,
        description="with a commit: the branch it must be on (its tip or an ancestor: the "
        "agent refuses it otherwise); alone: a branch or tag, built as it is now",
    )
    commit: Sha | None = Field(description="check out exactly this; None: what ref names")
    dockerfile: str = Field(max_length=255)
    push_repo: str = Field(max_length=512, description="HOST:PORT/PROJECT/APP, no tag")
    tag_date: str = Field(pattern=r"^\d{8}$", description="YYYYMMDD (UTC) of the build")
    login: RegistryLogin | None = None
    memory_mb: int = Field(ge=64, le=1 << 20, description="the build's memory limit")
    timeout_seconds: int = Field(ge=10, le=86_400)


class BuildOrders(Schema):
    generation: int
    orders: list[BuildOrder]


class BuildDone(Schema):
    commit: Sha
    tag: str = Field(pattern=r"^\d{8}-[0-9a-f]{7}$", description="YYYYMMDD-<sha7> it pushed")
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="the pushed manifest's")
    size: int = Field(default=0, ge=0)
    seconds: dict[str, float] = Field(default={}, description="clone, build, push")


class BuildFailure(Schema):
    error: str = Field(max_length=4096, description="what failed, the tail of the log's cause")
    commit: Sha | None = None
