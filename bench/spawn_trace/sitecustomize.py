"""Loaded by an agent started with this directory on PYTHONPATH (bench/spawn_agent.py):
times the agent's steps on the spawn path into $DOCKYARD_TRACE, one JSON line per
call (name, thread, first str argument, start and end on CLOCK_MONOTONIC, which all
processes of the machine share). Nothing of the agent changes but the wrapping."""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from typing import Any

WRAPPED = {
    "dockyard.compute.client:ServerClient": ("desired", "report"),
    "dockyard.compute.agent:Agent": ("receive", "reconcile_once", "_run_step"),
    "dockyard.compute.worker:Worker": (
        "_spawn", "_ensure_image", "_write_files", "_prepare_procview", "_attach_volumes",
        "_create", "_put_config", "_start", "_config_once", "_start_and_prepare", "_plumb",
        "_report", "_spec",
    ),
    "dockyard.compute.drivers.docker:DockerDriver": (
        "create", "start", "put_files", "list", "inspect", "update_resources",
    ),
    "dockyard.compute.plumber:HostPlumber": (
        "prepare", "plumb", "shape", "links", "sync_bridges", "unguarded",
    ),
    "dockyard.compute.procfs:ProcView": ("prepare",),
    "dockyard.compute.store:Store": (
        "save_desired", "records", "save", "write_files", "record", "heard_from_server",
    ),
}
# the server's side: module functions
FUNCTIONS = {
    "dockyard.db.instances": ("create", "report"),
    "dockyard.db.move_steps": ("on_report",),
    "dockyard.api.hosts": ("_desired",),
    "dockyard.api.instances": ("_watched",),
}


def _install(path: str) -> None:
    import importlib

    out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    lock = threading.Lock()

    def write(name: str, key: Any, start: float) -> None:
        end = time.monotonic()
        line = json.dumps({"n": name, "t": threading.current_thread().name,
                           "k": key if isinstance(key, str) else None, "s": start, "e": end})
        with lock:
            out.write(line + "\n")

    def wrap_function(module: Any, name: str) -> None:
        fn = getattr(module, name)

        @functools.wraps(fn)
        def timed(*args: Any, **kw: Any) -> Any:
            start = time.monotonic()
            try:
                return fn(*args, **kw)
            finally:
                write(f"{module.__name__.rsplit('.', 1)[-1]}.{name}", None, start)

        setattr(module, name, timed)

    def wrap(cls: Any, name: str) -> None:
        fn = getattr(cls, name)

        @functools.wraps(fn)
        def timed(self: Any, *args: Any, **kw: Any) -> Any:
            start = time.monotonic()
            try:
                return fn(self, *args, **kw)
            finally:
                first = args[0] if args else None
                key = first if isinstance(first, str) else getattr(
                    first, "id", getattr(first, "instance_id", None)
                )
                if key is None and len(args) > 1:
                    key = getattr(args[1], "id", None)
                write(f"{cls.__name__}.{name}", key, start)

        setattr(cls, name, timed)

    for where, names in WRAPPED.items():
        module, cls_name = where.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        for name in names:
            wrap(cls, name)
    for module_name, names in FUNCTIONS.items():
        module = importlib.import_module(module_name)
        for name in names:
            wrap_function(module, name)
    app = importlib.import_module("dockyard.api.app")
    create_app = app.create_app

    def traced_app(*args: Any, **kw: Any) -> Any:
        inner = create_app(*args, **kw)

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            start = time.monotonic()
            try:
                await inner(scope, receive, send)
            finally:
                if scope["type"] == "http":
                    write(f"http {scope['method']} {scope['path'].split('/')[2]}", None, start)

        asgi.state = inner.state  # type: ignore[attr-defined]
        return asgi

    app.create_app = traced_app


if os.environ.get("DOCKYARD_TRACE"):
    _install(os.environ["DOCKYARD_TRACE"])
