"""A real ``dockyard-server`` in a subprocess: the lab's (``dockyard.lab.daemons``)."""

from __future__ import annotations

from dockyard.lab.daemons import ServerProcess, server
from dockyard.lab.procs import free_port

__all__ = ["ServerProcess", "free_port", "server"]
