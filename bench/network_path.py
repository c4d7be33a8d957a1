"""TCP throughput of three paths between two endpoints on one host, with iperf3.

    dockyard   two instances on one Linux bridge, veth to veth, no NAT
    nat        two containers on Docker's default bridge, the client going
               through a published port (-p, docker-proxy/DNAT), as plain Docker does
    veth       a bare veth pair between two namespaces: the ceiling

The NAT case runs its dockerd inside a network namespace of its own, so its
iptables rules and docker0 never touch the machine's interfaces. iperf3 runs
in each container's network namespace (nsenter -n): the packets take the
container's path. Run as root:

    .venv/bin/python -m bench.network_path [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker  # noqa: E402

from dockyard.images import rootfs  # noqa: E402
from dockyard.lab.daemons import Dockerd  # noqa: E402
from dockyard.lab.onehost import OneHost as Cluster  # noqa: E402
from dockyard.lab.procs import run, wait_for  # noqa: E402


def iperf(server_ns: list[str], client_ns: list[str], host: str, port: int, secs: int) -> float:
    """Gbit/s received by the server side of one TCP stream."""
    srv = subprocess.Popen(
        [*server_ns, "iperf3", "-s", "-1", "-p", "5201"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        out = run(
            *client_ns,
            "iperf3",
            "-c",
            host,
            "-p",
            str(port),
            "-t",
            str(secs),
            "-J",
            timeout=secs + 30,
        ).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        srv.wait(10)


def nsenter(pid: int) -> list[str]:
    return ["nsenter", "-t", str(pid), "-n"]


def dockyard_path(secs: int) -> float:
    c = Cluster()
    try:
        c.start()
        c.cli("network", "create", "net", "--cidr", f"{c.subnet}.0/24", "--bridge", c.bridge)
        c.cli("flavor", "create", "small", "--vcpus", "1", "--memory", "256")
        tar = c.root / "demo.tar"
        c.cli("image", "build-demo", "--output", str(tar))
        c.cli("image", "import", "demo", "--rootfs", str(tar))
        a, b = c.create("a"), c.create("b")
        pa = c.inspect(a["id"])["State"]["Pid"]
        pb = c.inspect(b["id"])["State"]["Pid"]
        return iperf(nsenter(pa), nsenter(pb), a["ip"], 5201, secs)
    finally:
        c.stop()


def nat_path(secs: int) -> float:
    tag = secrets.token_hex(3)
    ns = f"dyb-{tag}"
    root = Path(tempfile.mkdtemp(prefix=f"dyk-nat-{tag}-"))
    run("ip", "netns", "add", ns)
    run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    d = Dockerd(root, tag)
    log = (root / "dockerd.log").open("ab")
    d.proc = subprocess.Popen(  # the default networking: docker0, iptables, userland proxy
        [
            "nsenter",
            f"--net=/run/netns/{ns}",
            "dockerd",
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(d.exec_root),
            "--host",
            d.url,
            "--pidfile",
            str(root / "pid"),
            "--bip",
            "198.19.250.1/24",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        wait_for(d.ping, 60, "the NAT dockerd")
        client = docker.DockerClient(base_url=d.url)
        tar = rootfs.build(root / "bb.tar")
        client.api.import_image_from_file(
            str(tar), repository="bench-bb", tag="1", changes=['CMD ["/sbin/init"]']
        )
        srv = client.containers.run("bench-bb:1", detach=True, ports={"5201/tcp": 15201})
        cli = client.containers.run("bench-bb:1", detach=True)
        srv.reload()
        cli.reload()
        # the client reaches the server through the published port on the host side
        gbit = iperf(
            nsenter(srv.attrs["State"]["Pid"]),
            nsenter(cli.attrs["State"]["Pid"]),
            "198.19.250.1",
            15201,
            secs,
        )
        for ctr in (srv, cli):
            ctr.remove(force=True)
        client.close()
        return gbit
    finally:
        d.stop()
        run("ip", "netns", "del", ns, check=False)
        shutil.rmtree(d.exec_root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def veth_path(secs: int) -> float:
    tag = secrets.token_hex(3)
    a, b = f"dyva-{tag}", f"dyvb-{tag}"
    try:
        for ns in (a, b):
            run("ip", "netns", "add", ns)
        run("ip", "link", "add", "v0", "netns", a, "type", "veth", "peer", "name", "v1", "netns", b)
        for ns, dev, ip in ((a, "v0", "198.19.251.1/24"), (b, "v1", "198.19.251.2/24")):
            run("ip", "netns", "exec", ns, "ip", "addr", "add", ip, "dev", dev)
            run("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
        return iperf(
            ["ip", "netns", "exec", a], ["ip", "netns", "exec", b], "198.19.251.1", 5201, secs
        )
    finally:
        for ns in (a, b):
            run("ip", "netns", "del", ns, check=False)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=int, default=5)
    secs = p.parse_args().seconds
    veth = veth_path(secs)
    dy = dockyard_path(secs)
    nat = nat_path(secs)
    print(f"TCP throughput, one iperf3 stream, {secs} s each, this host")
    print(f"  bare veth pair (ceiling)          {veth:6.2f} Gbit/s   1.00")
    print(f"  dockyard: bridge, no NAT          {dy:6.2f} Gbit/s   {dy / veth:.2f} of the ceiling")
    print(
        f"  docker: default bridge, -p (NAT)  {nat:6.2f} Gbit/s   {nat / veth:.2f} of the ceiling"
    )
    print(f"  dockyard / docker NAT: {dy / nat:.2f}x")


if __name__ == "__main__":
    main()
