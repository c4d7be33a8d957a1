"""loadavg: the container's load average as the agent computes it.

The agent samples the container's tasks in state R or D every 5 seconds and
runs the kernel's fixed-point algorithm (procview/loadavg.py). Without the
agent's figures this says so and shows the kernel's, which are the host's.
"""

from __future__ import annotations

import argparse
import json
import sys

from dockyard.tools.sources import Container


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="loadavg", description="this container's load average")
    p.add_argument("--json", action="store_true", help="one JSON object")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    load = Container().load()
    source = "container (dockyard agent)" if load.from_agent else "HOST (no agent view mounted)"
    if a.json:
        print(json.dumps(load.__dict__))
    else:
        print(
            f"{load.one:.2f} {load.five:.2f} {load.fifteen:.2f}  "
            f"running {load.running} of {load.total} tasks  [{source}]"
        )
    return 0 if load.from_agent else 1
