#!/usr/bin/env python3
"""Keep an nginx upstream file in step with a Dockyard stack's healthy members.

Long-polls GET /v1/apps/APP/stacks/STACK/endpoints?version=V&wait=30: the server
answers as soon as the stack's ready members change (a deploy, a scale, a failed
health check), else after 30 s with the same version. On every change the script
writes the upstream file atomically (a temporary file renamed over it) and runs the
reload command. Standard library only: copy it to the load balancer's host.

    DOCKYARD_URL=https://cloud:8787 DOCKYARD_TOKEN=... \\
      nginx_upstream.py shop/web --out /etc/nginx/conf.d/shop_web.conf \\
      --reload 'nginx -s reload'

and in nginx:  location / { proxy_pass http://shop_web; }
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def render(ep: dict[str, Any]) -> str:
    """An upstream named APP_STACK; with no member, a closed placeholder (nginx refuses
    an empty upstream)."""
    name = f"{ep['app']}_{ep['stack']}".replace("-", "_").replace(".", "_")
    servers = [
        f"    server {e['ip']}{':' + str(e['port']) if e['port'] else ''};" for e in ep["endpoints"]
    ] or ["    server 127.0.0.1:1 down;"]
    return "\n".join([f"# version {ep['version']}", f"upstream {name} {{", *servers, "}"]) + "\n"


def fetch(url: str, token: str, version: str, wait: float, ca: str | None) -> dict[str, Any]:
    query = f"?version={version}&wait={wait:g}" if version else ""
    req = urllib.request.Request(url + query, headers={"authorization": f"Bearer {token}"})
    ctx = ssl.create_default_context(cafile=ca) if url.startswith("https") else None
    with urllib.request.urlopen(req, timeout=wait + 30, context=ctx) as r:
        body: dict[str, Any] = json.load(r)
        return body


def write(path: Path, text: str) -> bool:
    """Replace ``path`` with ``text`` atomically; False when it already holds it."""
    if path.exists() and path.read_text() == text:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stack", metavar="APP/STACK")
    p.add_argument("--out", type=Path, required=True, help="the upstream file to keep")
    p.add_argument("--reload", help="a command run after each change, e.g. 'nginx -s reload'")
    p.add_argument("--wait", type=float, default=30, help="seconds the server holds a poll")
    p.add_argument("--once", action="store_true", help="write the file once and exit")
    p.add_argument("--max-changes", type=int, default=0, help="exit after N changes (tests)")
    a = p.parse_args(argv)
    base, token = os.environ.get("DOCKYARD_URL"), os.environ.get("DOCKYARD_TOKEN")
    if not base or not token:
        p.error("set DOCKYARD_URL and DOCKYARD_TOKEN")
    app, _, stack = a.stack.partition("/")
    url = f"{base.rstrip('/')}/v1/apps/{app}/stacks/{stack}/endpoints"
    version, changes = "", 0
    while True:
        try:
            ep = fetch(url, token, version, a.wait, os.environ.get("DOCKYARD_CA"))
        except (urllib.error.URLError, OSError) as exc:
            print(f"nginx_upstream: {exc}; retrying in 2 s", file=sys.stderr)
            time.sleep(2)  # the file keeps the last good list meanwhile
            continue
        if ep["version"] != version:
            version = ep["version"]
            if write(a.out, render(ep)):
                changes += 1
                print(f"{a.out}: {len(ep['endpoints'])} servers ({version})", file=sys.stderr)
                if a.reload:
                    subprocess.run(shlex.split(a.reload), check=False)
        if a.once or (a.max_changes and changes >= a.max_changes):
            return 0


if __name__ == "__main__":
    sys.exit(main())
