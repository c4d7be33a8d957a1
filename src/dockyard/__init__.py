"""Dockyard: a private cloud of Docker machine containers with fixed IPs."""

__version__ = "0.1.0"
