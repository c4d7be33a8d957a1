"""A cloud of several hosts on one machine: `dockyard lab` (see README.md here)."""
