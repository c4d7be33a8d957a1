"""Flavors, images and networks: the admin's catalogue."""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session, object_session

from dockyard import model
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import Conflict, Forbidden, NotFound
from dockyard.network import hostname, ipam


def _find(s: Session, table: type[m.Flavor] | type[m.Image] | type[m.Network], key: str, what: str):  # type: ignore[no-untyped-def]
    row = s.scalar(select(table).where((table.name == key) | (table.id == key)))
    if row is None:
        raise NotFound(f"{what} {key!r} does not exist; see `dockyard {what} list`")
    return row


def _unique(
    s: Session, table: type[m.Flavor] | type[m.Image] | type[m.Network], name: str, what: str
) -> None:
    if s.scalar(select(table.id).where(table.name == name)) is not None:
        raise Conflict(f"{what} {name!r} already exists; choose another name or delete it first")


def _in_use(
    s: Session, column: InstrumentedAttribute[str], ident: str, what: str, name: str
) -> None:
    live = list(
        s.scalars(
            select(m.Instance.name).where(column == ident, m.Instance.deleted_at.is_(None)).limit(5)
        )
    )
    if what == "flavor":  # a resize in flight goes back to its old flavor if it fails
        resizing = select(m.Instance.name, m.Instance.old_flavor).where(
            m.Instance.deleted_at.is_(None), m.Instance.old_flavor.is_not(None)
        )
        live += [n for n, old in s.execute(resizing) if (old or {}).get("flavor_id") == ident]
    if live:
        raise Conflict(
            f"{what} {name!r} is used by instance(s) {', '.join(live)}; delete them first"
        )


def _in_stacks(s: Session, row: m.Flavor | m.Image | m.Network, what: str) -> None:
    """Refuse while a stack runs ``row`` (its current release's, a running deploy's
    target's, or a network its members are made on): healing and scaling make new
    members from it at any time."""
    stack = select(m.App.name, m.Stack.name).join(m.App, m.Stack.app_id == m.App.id)
    if what == "network":
        q = stack.where(m.Stack.network_id == row.id)
    else:
        column = m.Release.image_id if what == "image" else m.Release.flavor_id
        targets = select(m.Deploy.to_release_id).where(m.Deploy.running_stack_id.is_not(None))
        runs = or_(m.Release.id == m.Stack.release_id, m.Release.id.in_(targets))
        q = stack.join(m.Release, m.Release.stack_id == m.Stack.id).where(column == row.id, runs)
    using = sorted({f"{a}/{st}" for a, st in s.execute(q.limit(20))})
    if using:
        raise Conflict(
            f"{what} {row.name!r} is what stack(s) {', '.join(using[:5])} run; deploy them "
            f"with another {what} or delete them first"
        )


def _delete(
    s: Session, row: m.Flavor | m.Image | m.Network, column: InstrumentedAttribute[str], what: str
) -> None:
    """Refuse while a stack or a live instance uses ``row``; else delete it.

    Deleted instances keep their action log but lose their link to ``row`` (and, for a
    network, to its subnet); older releases keep its name and digest, not the link (a
    rollback to one says the image is gone). Flushed here, so a constraint still
    broken fails inside the caller's transaction, before the API answers.
    """
    _in_stacks(s, row, what)
    _in_use(s, column, row.id, what, row.name)
    if what != "network":
        release = m.Release.image_id if what == "image" else m.Release.flavor_id
        s.execute(update(m.Release).where(release == row.id).values({release.key: None}))
    unlink: dict[str, None] = {column.key: None}
    if what == "network":
        unlink["subnet_id"] = None
    s.execute(
        update(m.Instance)
        .where(column == row.id, m.Instance.deleted_at.is_not(None))
        .values(unlink)
    )
    s.delete(row)
    s.flush()


# --- flavors


def create_flavor(s: Session, req: model.FlavorCreate) -> model.Flavor:
    _unique(s, m.Flavor, req.name, "flavor")
    row = m.Flavor(**req.model_dump(exclude={"limits"}), limits=req.limits.model_dump())
    s.add(row)
    s.flush()
    return model.Flavor.model_validate(row)


def show_flavor(s: Session, key: str) -> model.Flavor:
    return model.Flavor.model_validate(flavor(s, key))


def flavor(s: Session, key: str) -> m.Flavor:
    return _find(s, m.Flavor, key, "flavor")  # type: ignore[no-any-return]


def list_flavors(s: Session) -> list[model.Flavor]:
    return [
        model.Flavor.model_validate(r) for r in s.scalars(select(m.Flavor).order_by(m.Flavor.name))
    ]


def delete_flavor(s: Session, key: str) -> None:
    _delete(s, flavor(s, key), m.Instance.flavor_id, "flavor")


# --- images
#
# Public images (project_id NULL) are the admins' catalogue; a project's own images
# are its snapshots and migration images. A member sees public images and its
# project's (others' are absent: 404, so names do not leak); admins and agents see
# all. Names are unique among public images and within a project, and a project's
# never equals a public one, so a member's name lookup is unambiguous; an admin's
# may match several projects' images and then asks for the id.


def _visible(who: Principal | None) -> ColumnElement[bool] | None:
    """What ``who`` may see of images (None: everything)."""
    if who is None or who.is_admin or who.role == "agent":
        return None
    return or_(m.Image.project_id.is_(None), m.Image.project_id == who.project_id)


def _migration_ids(s: Session, ids: list[str]) -> set[str]:
    """Of ``ids``, those of migration images (an image a migration made has its id)."""
    return set(s.scalars(select(m.Migration.id).where(m.Migration.id.in_(ids)))) if ids else set()


def _public_name_check(s: Session, name: str) -> None:
    """An admin's new public image: no image at all may have its name yet."""
    row = s.scalar(select(m.Image).where(m.Image.name == name).limit(1))
    if row is None:
        return
    owner = f" (a snapshot of project {row.owner.name}, id {row.id})" if row.owner else ""
    raise Conflict(f"image {name!r} already exists{owner}; choose another name or delete it first")


def private_name_check(s: Session, project_id: str, name: str) -> None:
    """A project's new image: not a public name, nor one the project already has.

    Other projects' names are not looked at, so this says nothing about them."""
    scope = or_(m.Image.project_id.is_(None), m.Image.project_id == project_id)
    public = s.scalar(select(m.Image.project_id.is_(None)).where(scope, m.Image.name == name))
    if public is None:
        return
    whose = "a public image" if public else "an image of this project"
    raise Conflict(f"{whose} named {name!r} already exists; choose another name for the snapshot")


def create_image(s: Session, req: model.ImageCreate) -> model.Image:
    _public_name_check(s, req.name)
    if req.source == model.ImageSource.docker:
        row = m.Image(
            name=req.name,
            source=req.source.value,
            ref=req.ref,
            status="active",
            command=req.command,
            key_processes=req.key_processes,
            procview=req.procview,
        )
    else:
        row = m.Image(
            name=req.name,
            source=req.source.value,
            ref="",
            status="queued",
            command=req.command,
            key_processes=req.key_processes,
            procview=req.procview,
        )
    s.add(row)
    s.flush()
    if not row.ref:
        row.ref = f"dockyard/{req.name.lower()}:{row.id[:8]}"
    return image_model(row)


def image(s: Session, key: str, who: Principal | None) -> m.Image:
    """The image named or numbered ``key`` among those ``who`` sees (None: all, for
    the server's own use). An id wins over a name; a name several projects use is
    refused with their ids (only admins can see more than one)."""
    q = select(m.Image).where((m.Image.name == key) | (m.Image.id == key))
    visible = _visible(who)
    if visible is not None:
        q = q.where(visible)
    rows = list(s.scalars(q.order_by(m.Image.created_at).limit(20)))
    exact = [r for r in rows if r.id == key]
    if exact or len(rows) == 1:
        return (exact or rows)[0]
    if not rows:
        raise NotFound(f"image {key!r} does not exist; see `dockyard image list`")
    which = "; ".join(f"{r.id} ({r.owner.name if r.owner else 'public'})" for r in rows)
    raise Conflict(f"several images are named {key!r}: {which}; give the id instead")


def image_model(row: m.Image, migration: bool | None = None) -> model.Image:
    """The wire form; ``migration`` (whether a migration made it) is looked up if None."""
    if row.project_id is None:
        kind = model.ImageKind.public
    else:
        if migration is None:
            s = object_session(row)
            migration = s is not None and bool(_migration_ids(s, [row.id]))
        kind = model.ImageKind.migration if migration else model.ImageKind.snapshot
    out = model.Image.model_validate(row)
    out.project, out.kind = (row.owner.name if row.owner else None), kind
    return out


def show_image(s: Session, key: str) -> model.Image:
    """Any image (the server's own use); handlers use ``show_for``."""
    return image_model(image(s, key, None))


def show_for(s: Session, who: Principal, key: str) -> model.Image:
    return image_model(image(s, key, who))


def image_uploaded(
    s: Session,
    image_id: str,
    sha256: str,
    size: int,
    digest: str | None = None,
    registry: str | None = None,
) -> model.Image:
    """Mark a rootfs image active with its tarball's hash (and, pushed to ``registry``,
    its manifest's digest); the row stays locked till commit."""
    row = s.scalar(select(m.Image).where(m.Image.id == image_id).with_for_update())
    if row is None:
        raise NotFound("the image was deleted during the upload; create it again")
    if row.source != model.ImageSource.rootfs.value:
        raise Conflict(f"image {row.name!r} comes from docker ({row.ref}); it takes no upload")
    row.sha256, row.size, row.status = sha256, size, "active"
    row.digest, row.registry_url = digest, registry
    return image_model(row)


def locked_sha256(s: Session, image_id: str) -> str | None:
    """The hash of the image's tarball in force, its row locked till commit; None when
    the image is gone or has none."""
    row = s.execute(select(m.Image.sha256).where(m.Image.id == image_id).with_for_update()).first()
    return None if row is None else row.sha256


def list_images(s: Session) -> list[model.Image]:
    """Every image, whoever owns it (the server's own use); handlers use ``list_for``."""
    return _models(s, list(s.scalars(select(m.Image).order_by(m.Image.name))))


def list_for(s: Session, who: Principal, migrations: bool = False) -> list[model.Image]:
    """What ``who`` sees: public images and its project's (admins: every project's);
    migration images only with ``migrations``."""
    q = select(m.Image).order_by(m.Image.name, m.Image.created_at)
    visible = _visible(who)
    if visible is not None:
        q = q.where(visible)
    out = _models(s, list(s.scalars(q)))
    return [i for i in out if migrations or i.kind != model.ImageKind.migration]


def _models(s: Session, rows: list[m.Image]) -> list[model.Image]:
    made = _migration_ids(s, [r.id for r in rows if r.project_id is not None])
    return [image_model(r, r.id in made) for r in rows]


def delete_image(s: Session, key: str, who: Principal | None = None) -> str:
    """Delete the image's record and return its id; the caller removes its file after
    the commit. A member deletes its project's images only (public ones are the
    admins'); ``who`` None: the server's own use."""
    row = image(s, key, who)
    if who is not None and not who.is_admin and row.project_id is None:
        raise Forbidden(
            f"image {row.name!r} is public; only admins delete public images "
            "(members delete their project's snapshots)"
        )
    if who is not None and not who.is_admin:
        _not_moving(s, row)
    _delete(s, row, m.Instance.image_id, "image")
    return row.id


def _not_moving(s: Session, row: m.Image) -> None:
    """A member may not pull the image from under its migration (admins may: the
    migration then rolls back)."""
    mig = s.get(m.Migration, row.id)
    if mig is not None and mig.finished_at is None:
        raise Conflict(
            f"image {row.name!r} carries migration {mig.id} of its instance, still "
            f"{mig.status}; delete it once the migration has ended"
        )


# --- networks


def create_network(s: Session, req: model.NetworkCreate) -> model.Network:
    _unique(s, m.Network, req.name, "network")
    taken = s.scalar(select(m.Network.name).where(m.Network.bridge == req.bridge))
    if taken:
        raise Conflict(f"bridge {req.bridge} already carries network {taken!r}; use another bridge")
    sub = ipam.validate(req.subnet)
    if sub.hostname_rule:
        hostname.validate_rule(sub.hostname_rule)
    row = m.Network(name=req.name, bridge=req.bridge, uplink=req.uplink, mtu=req.mtu)
    row.subnets.append(
        m.Subnet(
            cidr=sub.cidr,
            gateway=sub.gateway,
            pools=[p.model_dump() for p in sub.pools],
            reserved=sub.reserved,
            dns=sub.dns,
            hostname_rule=sub.hostname_rule,
        )
    )
    s.add(row)
    s.flush()
    return network_model(row)


def network(s: Session, key: str) -> m.Network:
    return _find(s, m.Network, key, "network")  # type: ignore[no-any-return]


def subnet_spec(row: m.Subnet) -> model.SubnetCreate:
    return model.SubnetCreate(
        cidr=row.cidr,
        gateway=row.gateway,
        pools=[model.Pool(**p) for p in row.pools],
        reserved=row.reserved,
        dns=row.dns,
        hostname_rule=row.hostname_rule,
    )


def network_model(row: m.Network) -> model.Network:
    subnets = [model.Subnet(id=sn.id, **subnet_spec(sn).model_dump()) for sn in row.subnets]
    return model.Network(
        id=row.id, name=row.name, bridge=row.bridge, uplink=row.uplink, mtu=row.mtu, subnets=subnets
    )


def list_networks(s: Session) -> list[model.Network]:
    return [network_model(r) for r in s.scalars(select(m.Network).order_by(m.Network.name))]


def delete_network(s: Session, key: str) -> None:
    _delete(s, network(s, key), m.Instance.network_id, "network")
