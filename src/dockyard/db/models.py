"""Tables. Desired state lives here; agents make hosts match it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, relationship


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)


class Quota(Base):
    """Per-project limits; a NULL column means unlimited."""

    __tablename__ = "quotas"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    instances: Mapped[int | None] = mapped_column(default=None)
    vcpus: Mapped[int | None] = mapped_column(default=None)
    memory_mb: Mapped[int | None] = mapped_column(default=None)
    dedicated_cores: Mapped[int | None] = mapped_column(default=None)
    ips: Mapped[int | None] = mapped_column(default=None)
    volumes: Mapped[int | None] = mapped_column(default=None)
    volume_gb: Mapped[int | None] = mapped_column(default=None)
    snapshots: Mapped[int | None] = mapped_column(default=None)  # images a project keeps


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(default=False)
    project: Mapped[Project] = relationship(lazy="joined")


class Token(Base):
    """A bearer token; only the SHA-256 of it is stored.

    Exactly one of user_id (a person) or host_name (an agent) is set.
    """

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    host_name: Mapped[str | None] = mapped_column(String(63), default=None)
    created_at: Mapped[datetime] = mapped_column(default=now)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)  # None: never
    user: Mapped[User | None] = relationship(lazy="joined")


class JoinToken(Base):
    """A one-time token a new host trades for its agent token (``dockyard host add``).

    Only the SHA-256 is stored; ``used_at`` is set by the one trade that wins.
    """

    __tablename__ = "join_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    host_name: Mapped[str] = mapped_column(String(63))
    availability_zone: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(default=now)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class Host(Base):
    __tablename__ = "hosts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    availability_zone: Mapped[str] = mapped_column(String(63), default="nova")
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(255), default=None)
    cores: Mapped[int]
    memory_mb: Mapped[int]
    disk_gb: Mapped[int]
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    networks: Mapped[list[Any]] = mapped_column(default=list)
    docker_version: Mapped[str] = mapped_column(String(64), default="")
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    cpu_allocation_ratio: Mapped[float] = mapped_column(default=16.0)
    ram_allocation_ratio: Mapped[float] = mapped_column(default=1.0)
    reserved_cores: Mapped[list[Any]] = mapped_column(default=list)
    reserved_memory_mb: Mapped[int] = mapped_column(default=0)
    root_disk_quota: Mapped[bool] = mapped_column(default=False)
    last_heartbeat: Mapped[datetime | None] = mapped_column(default=None)
    # bumped whenever an instance on this host changes; agents long-poll on it
    generation: Mapped[int] = mapped_column(default=0)
    # consistency checks (db/drift.py): what the agent last reported, read only there
    baseline: Mapped[dict[str, Any] | None] = mapped_column(default=None, deferred=True)
    baseline_at: Mapped[datetime | None] = mapped_column(default=None)
    instance_drift: Mapped[list[Any] | None] = mapped_column(default=None, deferred=True)


class BaselineDeclared(Base):
    """An item of the cluster's baseline an admin declared (``host baseline set``)."""

    __tablename__ = "baseline_declared"
    item: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(default=now)


class Flavor(Base):
    __tablename__ = "flavors"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    vcpus: Mapped[int]
    memory_mb: Mapped[int]
    disk_gb: Mapped[int] = mapped_column(default=0)
    dedicated: Mapped[bool] = mapped_column(default=False)
    pids_limit: Mapped[int] = mapped_column(default=1024)
    limits: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Image(Base):
    """A public image (``project_id`` NULL: the admins' catalogue) or a project's own
    (its snapshots and migration images). Names: unique among public images (the
    partial index) and within a project (the constraint); a project's name never
    equals a public one (checked in db/catalog.py), so a member's lookup by name
    is unambiguous."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("project_id", "name", name="uq_images_project_name"),
        Index(
            "uq_images_public_name",
            "name",
            unique=True,
            sqlite_where=text("project_id IS NULL"),
            postgresql_where=text("project_id IS NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63))
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id"), default=None, index=True
    )
    owner: Mapped[Project | None] = relationship()  # the wire form calls it project
    source: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    size: Mapped[int | None] = mapped_column(default=None)
    command: Mapped[list[Any] | None] = mapped_column(default=None)
    # what supervisord runs in instances of this image: monitoring watches these
    key_processes: Mapped[list[Any]] = mapped_column(default=list)
    procview: Mapped[bool] = mapped_column(default=True)  # and the flavor's: both must say yes
    created_at: Mapped[datetime] = mapped_column(default=now)
    # pushed to the primary registry at `registry_url` as `ref`'s repository: hosts
    # pull REGISTRY/REPO@digest (their AZ's cache first); NULL: served as a tarball
    digest: Mapped[str | None] = mapped_column(String(71), default=None)
    registry_url: Mapped[str | None] = mapped_column(String(255), default=None)
    # a snapshot: the instance it was committed from (evacuation rebuilds from the
    # latest one) and how many layers it has (flattened before Docker's 127)
    snapshot_of: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    layers: Mapped[int | None] = mapped_column(default=None)
    # taken by the instance's schedule (db/schedules.py): counted and pruned beyond its
    # snapshot_keep; a manual snapshot (False) is neither
    periodic: Mapped[bool] = mapped_column(default=False)


class Registry(Base):
    """A pull-through cache of the primary registry serving one availability zone."""

    __tablename__ = "registries"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    availability_zone: Mapped[str] = mapped_column(String(63), unique=True)
    url: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=now)


class RegistryGc(Base):
    """The primary registry's garbage collection (db/registry_gc.py): ``requested_at``
    a collection waits (for pushes in flight to end), ``running_since`` one runs and no
    push is ordered meanwhile, ``postponed`` why the last attempt waited."""

    __tablename__ = "registry_gc"
    url: Mapped[str] = mapped_column(String(255), primary_key=True)
    requested_at: Mapped[datetime | None] = mapped_column(default=None)
    running_since: Mapped[datetime | None] = mapped_column(default=None)
    postponed: Mapped[str | None] = mapped_column(String(1024), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Network(Base):
    __tablename__ = "networks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    bridge: Mapped[str] = mapped_column(String(15))
    uplink: Mapped[str | None] = mapped_column(String(15), default=None)
    mtu: Mapped[int] = mapped_column(default=1500)
    subnets: Mapped[list[Subnet]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="Subnet.cidr"
    )


class Subnet(Base):
    __tablename__ = "subnets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"))
    cidr: Mapped[str] = mapped_column(String(18))
    gateway: Mapped[str | None] = mapped_column(String(15))
    pools: Mapped[list[Any]] = mapped_column(default=list)
    reserved: Mapped[list[Any]] = mapped_column(default=list)
    dns: Mapped[list[Any]] = mapped_column(default=list)
    hostname_rule: Mapped[str | None] = mapped_column(String(128), default=None)


class IpAllocation(Base):
    """One row per address in use; the unique key is what makes IPAM race-free."""

    __tablename__ = "ip_allocations"
    __table_args__ = (UniqueConstraint("subnet_id", "address"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id"))
    address: Mapped[str] = mapped_column(String(15))
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"))


class CoreClaim(Base):
    """A physical core pinned to one dedicated instance."""

    __tablename__ = "core_claims"
    __table_args__ = (UniqueConstraint("host_id", "core"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"))
    core: Mapped[int]
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"))


class ServerGroup(Base):
    """A project's placement policy for some of its instances. Its members are the
    live instances whose ``server_group_id`` names it: no membership table."""

    __tablename__ = "server_groups"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    policy: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=now)
    project: Mapped[Project] = relationship(lazy="joined")


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    # NULL only on a deleted instance whose flavor/image/network was deleted later: live
    # instances always have all three (a catalogue delete is refused while they do)
    flavor_id: Mapped[str] = mapped_column(ForeignKey("flavors.id"), nullable=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), nullable=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), nullable=True)
    subnet_id: Mapped[str | None] = mapped_column(ForeignKey("subnets.id"), default=None)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), default=None, index=True)
    availability_zone: Mapped[str | None] = mapped_column(String(63), default=None)
    server_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("server_groups.id"), default=None, index=True
    )
    ip: Mapped[str | None] = mapped_column(String(15), default=None)
    mac: Mapped[str | None] = mapped_column(String(17), default=None)
    hostname: Mapped[str | None] = mapped_column(String(63), default=None)
    # flavor figures copied at claim time: a later flavor edit must not change a claim
    vcpus: Mapped[int]
    memory_mb: Mapped[int]
    disk_gb: Mapped[int]
    dedicated: Mapped[bool] = mapped_column(default=False)
    pids_limit: Mapped[int] = mapped_column(default=1024)
    limits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    volumes: Mapped[list[Any]] = mapped_column(default=list)
    ssh_keys: Mapped[list[Any]] = mapped_column(default=list)  # OpenSSH public keys for root
    key_processes: Mapped[list[Any]] = mapped_column(default=list)  # copied from the image
    vm_state: Mapped[str] = mapped_column(String(16), default="building")
    task_state: Mapped[str | None] = mapped_column(String(16), default="scheduling")
    power_state: Mapped[str] = mapped_column(String(16), default="nostate")
    reboot_seq: Mapped[int] = mapped_column(default=0)
    # what the PaaS (or a user) sets beyond the image: model/health.py
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    files: Mapped[list[Any]] = mapped_column(default=list)
    health_check: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    health: Mapped[dict[str, Any] | None] = mapped_column(default=None)  # the agent's last word
    rebuild_seq: Mapped[int] = mapped_column(default=0)
    # while a rebuild is in flight: the image and settings to restore if it fails
    rebuild_from: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # while a resize is in flight: the flavor figures and cores to restore if it fails
    old_flavor: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    fault: Mapped[str | None] = mapped_column(String(1024), default=None)
    # periodic snapshots (db/schedules.py): every N seconds, keeping the last K
    snapshot_every: Mapped[int | None] = mapped_column(default=None)
    snapshot_keep: Mapped[int] = mapped_column(default=3)
    snapshot_last_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now, onupdate=now)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    flavor: Mapped[Flavor] = relationship(lazy="joined")
    image: Mapped[Image] = relationship(lazy="joined")
    network: Mapped[Network] = relationship(lazy="joined")
    host: Mapped[Host | None] = relationship(lazy="joined")
    project: Mapped[Project] = relationship(lazy="joined")
    server_group: Mapped[ServerGroup | None] = relationship(lazy="joined")
    cores: Mapped[list[CoreClaim]] = relationship(lazy="selectin", order_by="CoreClaim.core")


class Volume(Base):
    """A tenant's named volume: an ext4 image of a fixed size on one host.

    ``host_id`` is NULL until an instance using it is first placed; from then on
    its data lives on that host and instances using it are placed there. The
    instances using it are those whose ``volumes`` name its id (db/volumes.py).
    """

    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    size_mb: Mapped[int]
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), default=None, index=True)
    created_at: Mapped[datetime] = mapped_column(default=now)
    project: Mapped[Project] = relationship(lazy="joined")
    host: Mapped[Host | None] = relationship(lazy="joined")


class InstanceEvent(Base):
    """Something the kernel did to an instance: an OOM kill, the pids limit hit, throttling."""

    __tablename__ = "instance_events"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    time: Mapped[datetime] = mapped_column(default=now)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(String(512))


class InstanceAction(Base):
    __tablename__ = "instance_actions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    user_name: Mapped[str | None] = mapped_column(String(63))
    start_time: Mapped[datetime] = mapped_column(default=now)
    finish_time: Mapped[datetime | None] = mapped_column(default=None)
    result: Mapped[str | None] = mapped_column(String(16), default=None)
    message: Mapped[str | None] = mapped_column(String(1024), default=None)


class Migration(Base):
    """One move of an instance to another host: a cold migration or an evacuation.

    The instance keeps its id, IP, MAC and hostname. ``status`` walks
    queued -> snapshotting -> starting -> finished, or ends in error (the instance
    is back on the source, ``reason`` says why). ``source_state`` says what became of
    the source's container and data: kept (until the target answers, or fenced
    after an evacuation), removed, or released (recovered and let go by an admin).
    """

    __tablename__ = "migrations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # migration | evacuation
    status: Mapped[str] = mapped_column(String(16), default="queued")
    source_host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    target_host_id: Mapped[str | None] = mapped_column(
        ForeignKey("hosts.id"), default=None, index=True
    )
    # the source's pinned cores, given back if the move fails
    source_cores: Mapped[list[Any]] = mapped_column(default=list)
    source_state: Mapped[str] = mapped_column(String(16), default="kept")
    snapshot_digest: Mapped[str | None] = mapped_column(String(71), default=None)
    volumes: Mapped[dict[str, Any]] = mapped_column(default=dict)  # id -> VolumeCopy
    seconds: Mapped[dict[str, Any]] = mapped_column(default=dict)  # stop, commit, push, ...
    reason: Mapped[str | None] = mapped_column(String(1024), default=None)
    user_name: Mapped[str | None] = mapped_column(String(63), default=None)
    started_at: Mapped[datetime] = mapped_column(default=now)
    stopped_at: Mapped[datetime | None] = mapped_column(default=None)  # source stopped
    resumed_at: Mapped[datetime | None] = mapped_column(default=None)  # running again
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # a resize that needed the move (resize --allow-migrate): the flavor the instance
    # takes once it runs on the target; the target was chosen and claimed for it
    flavor_id: Mapped[str | None] = mapped_column(ForeignKey("flavors.id"), default=None)
    flavor: Mapped[Flavor | None] = relationship(lazy="joined")
    # evacuation (0018): the image it was rebuilt from and the one it ran on the dead host,
    # what the rebuild loses (for users), and when the dead host's agent fenced it
    rebuilt_from: Mapped[str | None] = mapped_column(String(36), default=None)
    source_image_id: Mapped[str | None] = mapped_column(String(36), default=None)
    note: Mapped[str | None] = mapped_column(String(1024), default=None)
    fenced_at: Mapped[datetime | None] = mapped_column(default=None)
    # its volume copies and superseded images deleted from the registry (db/move_cleanup.py)
    registry_cleaned_at: Mapped[datetime | None] = mapped_column(default=None)
    instance: Mapped[Instance] = relationship(lazy="joined")
    source_host: Mapped[Host] = relationship(lazy="joined", foreign_keys=[source_host_id])
    target_host: Mapped[Host | None] = relationship(lazy="joined", foreign_keys=[target_host_id])


class Recovery(Base):
    """Files read off a host's disk for an instance (its writable layer, its named
    volumes) by that host's agent, even with dockerd down: queued -> done | error,
    done -> expired; with ``into_*``: queued -> delivering -> done | error. ``data``
    is the tar the agent uploaded, dropped a day after (db/recoveries.py KEPT_FOR)."""

    __tablename__ = "recoveries"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    path: Mapped[str] = mapped_column(String(4096))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    size: Mapped[int | None] = mapped_column(default=None)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[str | None] = mapped_column(String(1024), default=None)
    user_name: Mapped[str | None] = mapped_column(String(63), default=None)
    data: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, default=None))
    created_at: Mapped[datetime] = mapped_column(default=now)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # --into INSTANCE:PATH: the target's agent writes the tar there (status delivering)
    into_instance_id: Mapped[str | None] = mapped_column(
        ForeignKey("instances.id"), default=None, index=True
    )
    into_path: Mapped[str | None] = mapped_column(String(4096), default=None)
    instance: Mapped[Instance] = relationship(lazy="joined", foreign_keys=[instance_id])
    host: Mapped[Host] = relationship(lazy="joined")
    into_instance: Mapped[Instance | None] = relationship(
        lazy="joined", foreign_keys=[into_instance_id]
    )


class AlertReceiver(Base):
    """Where alerts go (db/alerts.py): ``config`` holds ReceiverCreate's fields but the
    name and kind, secrets included (rendered into Alertmanager's configuration);
    ``adapter_token`` authenticates Alertmanager at this server's adapter."""

    __tablename__ = "alert_receivers"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    adapter_token: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=now)


class AlertRoute(Base):
    """Which alerts go to which receiver, tried in ``position`` order (then age)."""

    __tablename__ = "alert_routes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    receiver_id: Mapped[str] = mapped_column(ForeignKey("alert_receivers.id"))
    severity: Mapped[str | None] = mapped_column(String(32), default=None)
    project: Mapped[str | None] = mapped_column(String(63), default=None)
    position: Mapped[int] = mapped_column(default=0)
    continue_matching: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=now)
    receiver: Mapped[AlertReceiver] = relationship(lazy="joined")


# The PaaS (db/paas.py, db/deploys.py; paas/README.md) ---------------------------------


class App(Base):
    __tablename__ = "apps"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=now)
    project: Mapped[Project] = relationship(lazy="joined")


class Stack(Base):
    """Identical instances of one release in their own server group. ``release_id``:
    the release it runs or rolls to; its members are StackMember rows."""

    __tablename__ = "stacks"
    __table_args__ = (UniqueConstraint("app_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"))
    server_group_id: Mapped[str] = mapped_column(ForeignKey("server_groups.id"))
    replicas: Mapped[int]
    strategy: Mapped[str] = mapped_column(String(16))
    max_unavailable: Mapped[str] = mapped_column(String(4))
    max_surge: Mapped[str] = mapped_column(String(4))
    spread: Mapped[str] = mapped_column(String(8))
    progress_deadline_s: Mapped[int]
    port: Mapped[int | None] = mapped_column(default=None)
    release_id: Mapped[str | None] = mapped_column(String(36), default=None)
    next_ordinal: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=now)
    app: Mapped[App] = relationship(lazy="joined")
    network: Mapped[Network] = relationship(lazy="joined")
    server_group: Mapped[ServerGroup] = relationship(lazy="joined")


class Release(Base):
    """Immutable once written: what every instance of it runs."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("stack_id", "number"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    stack_id: Mapped[str] = mapped_column(ForeignKey("stacks.id"), index=True)
    number: Mapped[int]
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id"), nullable=True)
    image_name: Mapped[str] = mapped_column(String(63))
    digest: Mapped[str | None] = mapped_column(String(71), default=None)
    flavor_id: Mapped[str | None] = mapped_column(ForeignKey("flavors.id"), nullable=True)
    flavor_name: Mapped[str] = mapped_column(String(63))
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    files: Mapped[list[Any]] = mapped_column(default=list)
    health_check: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_by: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(default=now)
    result: Mapped[str] = mapped_column(String(16), default="pending")


class Deploy(Base):
    """A rollout of a stack to a release. ``running_stack_id`` is the stack's id while
    it runs and NULL after: its unique key allows one running deploy per stack."""

    __tablename__ = "deploys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    stack_id: Mapped[str] = mapped_column(ForeignKey("stacks.id"), index=True)
    running_stack_id: Mapped[str | None] = mapped_column(String(36), unique=True, default=None)
    kind: Mapped[str] = mapped_column(String(16))
    from_release_id: Mapped[str | None] = mapped_column(String(36), default=None)
    to_release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"))
    status: Mapped[str] = mapped_column(String(16), default="running")
    reason: Mapped[str | None] = mapped_column(String(1024), default=None)
    created_by: Mapped[str] = mapped_column(String(63))
    user_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=now)
    progress_at: Mapped[datetime] = mapped_column(default=now)  # the deadline counts from it
    ready_seen: Mapped[int] = mapped_column(default=0)  # ready members of the target, last pass
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class StackMember(Base):
    """An instance of a stack, and the release it runs (or is being rebuilt to)."""

    __tablename__ = "stack_members"
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), primary_key=True)
    stack_id: Mapped[str] = mapped_column(ForeignKey("stacks.id"), index=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"))
    # while a deploy rebuilds it: the release it ran, back in release_id if that fails
    from_release_id: Mapped[str | None] = mapped_column(ForeignKey("releases.id"), default=None)
    ordinal: Mapped[int]
    heals: Mapped[int] = mapped_column(default=0)  # restarts since it was last healthy
    healed_at: Mapped[datetime | None] = mapped_column(default=None)
    instance: Mapped[Instance] = relationship(lazy="joined")


class StackEvent(Base):
    __tablename__ = "stack_events"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    stack_id: Mapped[str] = mapped_column(ForeignKey("stacks.id"), index=True)
    time: Mapped[datetime] = mapped_column(default=now)
    message: Mapped[str] = mapped_column(String(1024))


# Continuous integration (db/builds.py; model/builds.py draws the flow) ----------------


class Hook(Base):
    """A git host's webhook for one branch of one repository, building into an app.
    ``secret`` is kept as sent (the server verifies HMACs with it) and shown once."""

    __tablename__ = "hooks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    repo: Mapped[str] = mapped_column(String(1024))
    branch: Mapped[str] = mapped_column(String(255))
    stack: Mapped[str] = mapped_column(String(63))
    auto_deploy: Mapped[bool] = mapped_column(default=False)
    dockerfile: Mapped[str] = mapped_column(String(255))
    secret: Mapped[str] = mapped_column(String(256))
    created_by: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(default=now)
    app: Mapped[App] = relationship(lazy="joined")


class Build(Base):
    """A build of one commit: queued -> running -> succeeded | failed | cancelled.
    ``busy_host`` is its host's name while it is assigned or running and NULL after:
    its unique key allows one build at a time per host. It goes with its app."""

    __tablename__ = "builds"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    hook_id: Mapped[str | None] = mapped_column(String(36), default=None)
    repo: Mapped[str] = mapped_column(String(1024))
    ref: Mapped[str] = mapped_column(String(255))
    commit: Mapped[str | None] = mapped_column(String(40), default=None)
    dockerfile: Mapped[str] = mapped_column(String(255))
    stack: Mapped[str | None] = mapped_column(String(63), default=None)
    auto_deploy: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    reason: Mapped[str | None] = mapped_column(String(4096), default=None)
    host_name: Mapped[str | None] = mapped_column(String(63), default=None)
    busy_host: Mapped[str | None] = mapped_column(String(63), unique=True, default=None)
    memory_mb: Mapped[int]
    timeout_seconds: Mapped[int]
    image_id: Mapped[str | None] = mapped_column(String(36), default=None)
    image_name: Mapped[str | None] = mapped_column(String(63), default=None)
    tag: Mapped[str | None] = mapped_column(String(512), default=None)
    digest: Mapped[str | None] = mapped_column(String(71), default=None)
    deploy_id: Mapped[str | None] = mapped_column(String(36), default=None)
    trigger: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(63))
    user_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=now)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    seconds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    log_size: Mapped[int] = mapped_column(default=0)  # bytes stored in build_log
    log_cut: Mapped[bool] = mapped_column(default=False)  # BUILD_LOG_MAX reached
    app: Mapped[App] = relationship(lazy="joined")
    project: Mapped[Project] = relationship(lazy="joined")


class BuildLogChunk(Base):
    """A piece of a build's log at byte ``offset``: append-only, contiguous."""

    __tablename__ = "build_log"
    __table_args__ = (UniqueConstraint("build_id", "offset"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), index=True)
    offset: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)
