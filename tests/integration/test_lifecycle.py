"""A user's journey on one host, against a real dockerd and the real kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cluster import wait_for

pytestmark = pytest.mark.root


def test_create_gives_an_active_reachable_instance_with_its_identity(cluster):
    ip = f"{cluster.subnet}.53"
    server = cluster.create("web", "--ip", ip)
    assert server["status"] == "ACTIVE" and server["power_state"] == "running"
    third_octet = cluster.subnet.split(".")[2]
    assert server["ip"] == ip and server["hostname"] == f"web{third_octet}053"  # web{o3}{o4:03d}
    assert cluster.probe.ping(ip)
    c = cluster.container(server["id"])
    assert c.exec_run("hostname").output.decode().strip() == server["hostname"]
    hosts = c.exec_run("cat /etc/hosts").output.decode()
    assert f"{ip}\t{server['hostname']}" in hosts
    addr = c.exec_run("ip -o addr show eth0").output.decode()
    assert f"{ip}/24" in addr
    route = c.exec_run("ip route").output.decode()
    assert f"default via {cluster.subnet}.1" in route
    mac = c.exec_run("cat /sys/class/net/eth0/address").output.decode().strip()
    assert mac == server["mac"]
    cfg = c.attrs["HostConfig"]
    assert c.attrs["HostConfig"]["NetworkMode"] == "none"
    # no libnetwork sandbox: the netns is runc's own (half of dockerd's create + start)
    assert c.attrs["Config"].get("NetworkDisabled") is True
    assert not c.attrs["NetworkSettings"].get("SandboxKey")
    assert cfg["RestartPolicy"]["Name"] in ("no", "")
    assert cfg["Memory"] == 128 * 2**20 and cfg["PidsLimit"] == 256
    assert cfg["CpuShares"] == 1024
    listing = cluster.cli("server", "list").stdout
    assert "web" in listing and ip in listing and "small (1C/128M/0G)" in listing
    cluster.cli("server", "delete", "web", "--wait")


def test_stop_start_reboot_delete_and_nothing_is_left(cluster):
    server = cluster.create("cycle")
    iid, ip = server["id"], server["ip"]
    assert cluster.cli_json("server", "stop", "cycle", "--wait")["status"] == "SHUTOFF"
    assert not cluster.probe.ping(ip)
    assert cluster.cli_json("server", "start", "cycle", "--wait")["status"] == "ACTIVE"
    assert cluster.probe.ping(ip)
    before = cluster.container(iid).attrs["State"]["StartedAt"]
    assert cluster.cli_json("server", "reboot", "cycle", "--wait")["status"] == "ACTIVE"
    assert cluster.container(iid).attrs["State"]["StartedAt"] != before
    assert cluster.probe.ping(ip)
    actions = cluster.cli_json("server", "actions", "cycle")
    assert [a["action"] for a in actions] == ["create", "stop", "start", "reboot"]
    assert all(a["result"] == "success" and a["user"] == "admin" for a in actions)
    cluster.cli("server", "delete", "cycle", "--wait")
    assert f"dy-{iid}" not in cluster.containers()
    assert cluster.links() == []
    assert cluster.agent_files() == []
    assert not cluster.probe.ping(ip)


def test_instances_on_one_bridge_reach_each_other(cluster):
    a, b = cluster.create("peer-a"), cluster.create("peer-b")
    ping = cluster.container(a["id"]).exec_run(f"ping -c 2 -W 1 {b['ip']}")
    assert ping.exit_code == 0, ping.output.decode()
    labels = cluster.api("GET", "/hosts/itest")["labels"]
    # the agent said what it found about iptables on bridged traffic, and let its bridge through
    assert labels["dockyard.bridge-nf"] in ("off", "on-allowed", "not-loaded")
    cluster.cli("server", "delete", "peer-a", "--wait")
    cluster.cli("server", "delete", "peer-b", "--wait")


def test_volume_is_mounted_and_survives_the_instance(cluster, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    server = cluster.create("vol", "--volume", f"{data}:/data")
    c = cluster.container(server["id"])
    assert c.exec_run("sh -c 'echo hello > /data/greeting'").exit_code == 0
    assert (data / "greeting").read_text() == "hello\n"
    cluster.cli("server", "delete", "vol", "--wait")
    assert (data / "greeting").exists()  # a volume is the user's data: never deleted


def test_failed_spawn_leaves_nothing_and_releases_the_ip(cluster):
    ip = f"{cluster.subnet}.77"
    r = cluster.cli(
        "server",
        "create",
        "broken",
        "--image",
        "demo",
        "--flavor",
        "small",
        "--network",
        "net",
        "--ip",
        ip,
        "--volume",
        "/nonexistent/dir:/data",
        "--wait",
        check=False,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "/nonexistent/dir" in r.stderr  # the fault says what to fix
    shown = cluster.cli_json("server", "show", "broken")
    assert shown["status"] == "ERROR" and shown["ip"] is None
    wait_for(lambda: cluster.containers() == [], 10, "the failed container to be removed")
    assert cluster.links() == [] and cluster.agent_files() == []
    # the address is free again
    ok = cluster.create("fixed", "--ip", ip)
    assert ok["status"] == "ACTIVE"
    cluster.cli("server", "delete", "broken", "--wait")
    cluster.cli("server", "delete", "fixed", "--wait")


def test_bad_input_is_a_clear_cli_error(cluster):
    r = cluster.cli(
        "server",
        "create",
        "x",
        "--image",
        "nope",
        "--flavor",
        "small",
        "--network",
        "net",
        check=False,
    )
    assert r.returncode == 1 and "image 'nope' does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    r = cluster.cli(
        "network", "create", "bad", "--cidr", "198.18.0.0/33", "--bridge", "b", check=False
    )
    assert r.returncode == 1 and "subnet.cidr" in r.stderr
    r = cluster.cli(
        "server",
        "create",
        "y",
        "--image",
        "demo",
        "--flavor",
        "small",
        "--network",
        "net",
        "--ip",
        "203.0.113.5",
        check=False,
    )
    assert r.returncode == 1 and "outside" in r.stderr and "(HTTP 409)" in r.stderr


def test_image_from_docker_is_used_as_is_or_refused_when_absent(cluster):
    cluster.create("warm")  # the demo image is now in dockerd under its ref
    ref = cluster.api("GET", "/images/demo")["ref"]
    cluster.cli("image", "import", "local", "--from-docker", ref, "--command", "/sbin/init")
    cluster.cli("image", "import", "ghost", "--from-docker", "nowhere/ghost:1")
    ok = cluster.cli_json(
        "server",
        "create",
        "fromdocker",
        "--image",
        "local",
        "--flavor",
        "small",
        "--network",
        "net",
        "--wait",
    )
    assert ok["status"] == "ACTIVE" and cluster.probe.ping(ok["ip"])
    r = cluster.cli(
        "server",
        "create",
        "ghosted",
        "--image",
        "ghost",
        "--flavor",
        "small",
        "--network",
        "net",
        "--wait",
        check=False,
    )
    assert r.returncode == 1 and "nowhere/ghost:1 is not on this host's dockerd" in r.stderr
    for name in ("warm", "fromdocker", "ghosted"):
        cluster.cli("server", "delete", name, "--wait")
    r = cluster.cli("image", "delete", "local", check=False)
    assert r.returncode == 0, r.stderr
    cluster.cli("image", "delete", "ghost")


def test_uplink_is_enslaved_and_carries_traffic_to_the_instance(cluster):
    """The datacenter side: a NIC on the bridge, and a neighbour behind it."""
    from tests.integration.cluster import run

    bridge, uplink, outside = f"dyu-{cluster.tag}", f"dyl{cluster.tag}", f"dyo{cluster.tag}"
    subnet = f"198.19.{int(cluster.tag[:2], 16)}"
    ns = f"dyn-{cluster.tag}"
    run("ip", "netns", "add", ns)
    try:
        run("ip", "link", "add", uplink, "type", "veth", "peer", "name", outside, "netns", ns)
        run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{subnet}.250/24", "dev", outside)
        run("ip", "netns", "exec", ns, "ip", "link", "set", outside, "up")
        cluster.cli(
            "network",
            "create",
            "dc",
            "--cidr",
            f"{subnet}.0/24",
            "--bridge",
            bridge,
            "--uplink",
            uplink,
            "--pool",
            f"{subnet}.10-{subnet}.20",
        )
        s = cluster.cli_json(
            "server",
            "create",
            "dcvm",
            "--image",
            "demo",
            "--flavor",
            "small",
            "--network",
            "dc",
            "--wait",
        )
        master = Path("/sys/class/net", uplink, "master").resolve().name
        assert master == bridge
        ping = run("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", s["ip"], check=False)
        assert ping.returncode == 0, "a host behind the uplink reaches the instance"
        cluster.cli("server", "delete", "dcvm", "--wait")
        cluster.cli("network", "delete", "dc")
    finally:
        run("ip", "netns", "del", ns, check=False)
        run("ip", "link", "del", uplink, check=False)
        run("ip", "link", "del", bridge, check=False)
