"""A per-container /proc view: what `free`, `top`, `uptime` and `cat /proc/meminfo`
read inside a machine container, computed from its cgroup.

Unlike lxcfs (a FUSE daemon in every read), the agent writes plain files that
are bind-mounted over /proc/meminfo, /proc/uptime, ... at container create.
Reads never touch a daemon: if the agent dies or is upgraded, reads keep
working and show the last values until it is back. Cost grows with the number
of containers (one refresh each per second), not with how often they are read.
"""
