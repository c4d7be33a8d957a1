"""What users see from the API: auth, isolation, errors, claims, actions."""

from __future__ import annotations


def test_no_token_and_bad_token_are_401_problem_json(cloud):
    r = cloud.client.get("/v1/instances")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert "DOCKYARD_TOKEN" in r.json()["detail"]
    assert cloud.call("GET", "/instances", token="dy_nope").status_code == 401


def test_validation_error_names_the_fields(cloud):
    r = cloud.call("POST", "/flavors", json={"name": "bad name!", "vcpus": 0, "memory_mb": 64})
    assert r.status_code == 422
    body = r.json()
    assert {e["field"] for e in body["errors"]} == {"name", "vcpus"}
    assert "vcpus" in body["detail"] and "name" in body["detail"]


def test_network_rules_are_checked(cloud):
    r = cloud.call(
        "POST",
        "/networks",
        json={
            "name": "n",
            "bridge": "b0",
            "subnet": {"cidr": "198.18.0.0/24", "hostname_rule": "x{o9}"},
        },
    )
    assert r.status_code == 422 and "o9" in r.json()["detail"]
    r = cloud.call(
        "POST", "/networks", json={"name": "n", "bridge": "b0", "subnet": {"cidr": "198.18.0.1/24"}}
    )
    assert r.status_code == 422 and "subnet.cidr" in r.json()["detail"]


def test_create_claims_host_ip_hostname_and_mac(cloud):
    cloud.catalog()
    cloud.register("h1")
    r = cloud.create("web")
    assert r.status_code == 202, r.text
    inst = r.json()
    assert inst["host"] == "h1" and inst["ip"] == "198.18.0.10"
    assert inst["hostname"] == "web0010" and inst["mac"] == "02:00:c6:12:00:0a"
    assert inst["status"] == "BUILD" and inst["task_state"] == "spawning"
    r = cloud.create("web")
    assert r.status_code == 409 and "already exists" in r.json()["detail"]


def test_explicit_ip_taken_or_outside_is_409(cloud):
    cloud.catalog()
    cloud.register()
    assert cloud.create("a", ip="198.18.0.53").json()["hostname"] == "web0053"
    r = cloud.create("b", ip="198.18.0.53")
    assert r.status_code == 409 and "already in use" in r.json()["detail"]
    r = cloud.create("c", ip="198.18.9.9")
    assert r.status_code == 409 and "outside" in r.json()["detail"]


def test_no_valid_host_says_which_filter(cloud):
    cloud.catalog()
    cloud.register("h1", memory_mb=100)
    r = cloud.create("big")
    assert r.status_code == 409
    body = r.json()
    assert body["title"] == "No valid host"
    assert "RamFilter rejected 1 of 1" in body["detail"]


def test_pool_exhaustion_is_409(cloud):
    cloud.catalog(pool_end="198.18.0.10")
    cloud.register()
    assert cloud.create("a").status_code == 202
    r = cloud.create("b")
    assert r.status_code == 409 and "no free addresses" in r.json()["detail"]


def test_project_isolation_and_reader(cloud):
    cloud.catalog()
    cloud.register()
    for p in ("p1", "p2"):
        cloud.ok("POST", "/projects", json={"name": p})
    alice = cloud.ok("POST", "/users", json={"name": "alice", "project": "p1"})["token"]
    bob = cloud.ok("POST", "/users", json={"name": "bob", "project": "p2"})["token"]
    rita = cloud.ok("POST", "/users", json={"name": "rita", "project": "p1", "role": "reader"})[
        "token"
    ]
    inst = cloud.create("mine", token=alice).json()
    assert cloud.call("GET", f"/instances/{inst['id']}", token=bob).status_code == 404
    assert cloud.call("DELETE", f"/instances/{inst['id']}", token=bob).status_code == 404
    assert cloud.ok("GET", "/instances", token=bob) == []
    assert cloud.ok("GET", f"/instances/{inst['id']}", token=rita)["name"] == "mine"
    r = cloud.create("nope", token=rita)
    assert r.status_code == 403 and "reader" in r.json()["detail"]
    assert (
        cloud.call(
            "POST", "/flavors", token=alice, json={"name": "x", "vcpus": 1, "memory_mb": 64}
        ).status_code
        == 403
    )


def test_agent_token_is_bound_to_its_host(cloud):
    cloud.catalog()
    token = cloud.register("h1")
    assert cloud.call("GET", "/instances", token=token).status_code == 403
    r = cloud.call("POST", "/agent/hosts/h2/heartbeat", token=token)
    assert r.status_code == 403 and "h1" in r.json()["detail"]
    assert cloud.call("GET", "/agent/hosts/h1/desired", token=cloud.admin).status_code == 403


def test_lifecycle_through_agent_reports_and_action_log(cloud):
    cloud.catalog()
    token = cloud.register("h1")
    inst = cloud.create("web", flavor="pinned").json()
    iid = inst["id"]
    desired = cloud.ok("GET", "/agent/hosts/h1/desired", token)
    (d,) = desired["instances"]
    assert d["power"] == "running" and d["cpuset"] == [0] and d["net"]["prefixlen"] == 24

    def report(**kw):
        cloud.ok("PUT", f"/agent/instances/{iid}/state", token, json=kw)

    report(power_state="running", task_done="spawning")
    assert cloud.ok("GET", f"/instances/{iid}")["status"] == "ACTIVE"
    r = cloud.call("POST", f"/instances/{iid}/start")
    assert r.status_code == 409 and "vm_state active" in r.json()["detail"]
    cloud.ok("POST", f"/instances/{iid}/stop")
    assert cloud.ok("GET", "/agent/hosts/h1/desired", token)["instances"][0]["power"] == "stopped"
    report(power_state="shutdown", task_done="powering-off")
    assert cloud.ok("GET", f"/instances/{iid}")["status"] == "SHUTOFF"
    cloud.ok("DELETE", f"/instances/{iid}")
    report(power_state="nostate", gone=True)
    assert cloud.call("GET", f"/instances/{iid}").status_code == 404
    host = cloud.ok("GET", "/hosts/h1")
    assert host["pinned_cores"] == {} and host["memory_mb_used"] == 0
    # the IP is free again
    assert cloud.create("again", ip=inst["ip"]).status_code == 202


def test_failed_spawn_releases_ip_and_cores_with_a_fault(cloud):
    cloud.catalog()
    token = cloud.register("h1")
    inst = cloud.create("web", flavor="pinned").json()
    cloud.ok(
        "PUT",
        f"/agent/instances/{inst['id']}/state",
        token,
        json={"power_state": "nostate", "task_done": "spawning", "error": "image missing"},
    )
    after = cloud.ok("GET", f"/instances/{inst['id']}")
    assert after["status"] == "ERROR" and "image missing" in after["fault"]
    assert after["ip"] is None and after["host"] is None
    assert cloud.ok("GET", "/hosts/h1")["pinned_cores"] == {}
    log = cloud.ok("GET", f"/instances/{inst['id']}/actions")
    assert log[0]["action"] == "create" and log[0]["result"] == "error"
    cloud.ok("DELETE", f"/instances/{inst['id']}")
    assert cloud.call("GET", f"/instances/{inst['id']}").status_code == 404


def test_openapi_document_lists_v1(cloud):
    doc = cloud.client.get("/openapi.json").json()
    assert "/v1/instances" in doc["paths"] and "/v1/networks" in doc["paths"]


def test_placement_spreads_by_default_and_packs_when_configured(tmp_path):
    from fastapi.testclient import TestClient

    from dockyard.api.app import create_app
    from dockyard.api.server import init
    from dockyard.db.session import Database
    from tests.api.conftest import Cloud

    for placement, expected in (("spread", ["h1", "h2", "h1"]), ("pack", ["h1", "h1", "h1"])):
        db = Database(f"sqlite:///{tmp_path}/{placement}.db")
        token = init(db)
        with TestClient(create_app(db, tmp_path, placement)) as client:
            cloud = Cloud(client, token)
            cloud.catalog()
            cloud.register("h1")
            cloud.register("h2")
            hosts = [cloud.create(f"vm{i}").json()["host"] for i in range(3)]
        db.engine.dispose()
        # equal free RAM ties break by name; then spread alternates, pack stays
        assert hosts == expected, placement


def test_tokens_rotate_and_revoke(cloud):
    cloud.ok("POST", "/projects", json={"name": "p1"})
    alice = cloud.ok("POST", "/users", json={"name": "alice", "project": "p1"})["token"]
    fresh = cloud.ok("POST", "/tokens", alice)
    assert cloud.ok("GET", "/whoami", fresh["token"])["name"] == "alice"
    mine = cloud.ok("GET", "/tokens", alice)
    assert len(mine) == 2 and all(t["user"] == "alice" for t in mine)
    old = next(t for t in mine if t["id"] != fresh["id"])
    cloud.ok("DELETE", f"/tokens/{old['id']}", fresh["token"])
    assert cloud.call("GET", "/whoami", alice).status_code == 401
    assert cloud.ok("GET", "/whoami", fresh["token"])["name"] == "alice"
    # someone else's token is not found, not forbidden: its existence is not revealed
    admin_tokens = [t for t in cloud.ok("GET", "/tokens") if t["user"] == "admin"]
    assert (
        cloud.call("DELETE", f"/tokens/{admin_tokens[0]['id']}", fresh["token"]).status_code == 404
    )


def test_resize_reclaims_on_the_same_host_and_rolls_back_on_failure(cloud):
    cloud.catalog()
    token = cloud.register("h1", cores=4)
    cloud.ok(
        "POST", "/flavors", json={"name": "pin2", "vcpus": 2, "memory_mb": 256, "dedicated": True}
    )
    cloud.ok("POST", "/flavors", json={"name": "huge", "vcpus": 1, "memory_mb": 10**6})
    inst = cloud.create("web", flavor="pinned").json()
    iid = inst["id"]
    r = cloud.call("POST", f"/instances/{iid}/resize", json={"flavor": "pin2"})
    assert r.status_code == 409 and "while the instance is spawning" in r.json()["detail"]
    cloud.ok(
        "PUT",
        f"/agent/instances/{iid}/state",
        token,
        json={"power_state": "running", "task_done": "spawning"},
    )
    out = cloud.ok("POST", f"/instances/{iid}/resize", json={"flavor": "pin2"})
    assert out["task_state"] == "resizing" and out["flavor"] == "pin2"
    (d,) = cloud.ok("GET", "/agent/hosts/h1/desired", token)["instances"]
    assert d["cpuset"] == [0, 1] and d["memory_mb"] == 256  # keeps core 0, gains core 1
    cloud.ok(
        "PUT",
        f"/agent/instances/{iid}/state",
        token,
        json={"power_state": "running", "task_done": "resizing", "error": "too small"},
    )
    back = cloud.ok("GET", f"/instances/{iid}")
    assert back["flavor"] == "pinned" and back["memory_mb"] == 128 and "too small" in back["fault"]
    assert cloud.ok("GET", "/hosts/h1")["pinned_cores"] == {"0": iid}
    r = cloud.call("POST", f"/instances/{iid}/resize", json={"flavor": "huge"})
    assert r.status_code == 409 and "does not fit on h1" in r.json()["detail"]
    log = cloud.ok("GET", f"/instances/{iid}/actions")
    assert log[-1]["action"] == "resize" and log[-1]["message"] == "pinned -> pin2: too small"


def test_host_show_accounts_reserve_ratios_and_pins(cloud):
    cloud.catalog()
    token = cloud.agent_token("h1")
    r = cloud.call(
        "POST",
        "/agent/hosts",
        token,
        json={"name": "h1", "cores": 4, "memory_mb": 8192, "disk_gb": 100, "reserved_cores": [7]},
    )
    assert r.status_code == 422 and "do not exist" in r.json()["detail"]
    cloud.ok(
        "POST",
        "/agent/hosts",
        token,
        json={
            "name": "h1",
            "cores": 4,
            "memory_mb": 8192,
            "disk_gb": 100,
            "reserved_cores": [0],
            "reserved_memory_mb": 2048,
            "cpu_allocation_ratio": 4,
        },
    )
    pinned = cloud.create("p", flavor="pinned").json()
    cloud.create("s").json()
    h = cloud.ok("GET", "/hosts/h1")
    assert h["pinned_cores"] == {"1": pinned["id"]}  # core 0 is the host's
    res = h["resources"]
    assert res["dedicated_cores"] == {"capacity": 3, "used": 1, "free": 2}
    assert res["shared_vcpus"] == {"capacity": 8, "used": 1, "free": 7}  # 2 cores x 4
    assert res["memory_mb"] == {"capacity": 6144, "used": 256, "free": 5888}
    (shared,) = [
        d
        for d in cloud.ok("GET", "/agent/hosts/h1/desired", token)["instances"]
        if not d["dedicated"]
    ]
    assert shared["cpuset"] == [2, 3]  # shared instances stay off reserved and pinned cores


def test_root_disk_flavor_is_refused_where_it_cannot_be_enforced(cloud):
    cloud.catalog()
    cloud.register("h1")
    cloud.ok(
        "POST", "/flavors", json={"name": "disk10", "vcpus": 1, "memory_mb": 64, "disk_gb": 10}
    )
    r = cloud.call(
        "POST",
        "/instances",
        json={"name": "d", "image": "img", "flavor": "disk10", "network": "net"},
    )
    assert r.status_code == 409 and "root disk size not enforceable" in r.json()["detail"]


def test_quotas_refuse_with_403_naming_the_limit(cloud):
    cloud.catalog()
    token = cloud.register("h1")
    cloud.ok("POST", "/projects", json={"name": "p1"})
    alice = cloud.ok("POST", "/users", json={"name": "alice", "project": "p1"})["token"]
    assert cloud.call("PATCH", "/projects/p1/quota", alice, json={"vcpus": 9}).status_code == 403
    cloud.ok("PATCH", "/projects/p1/quota", json={"instances": 2, "dedicated_cores": 1})
    a = cloud.create("a", token=alice, flavor="pinned").json()
    r = cloud.create("b", token=alice, flavor="pinned")
    assert r.status_code == 403
    body = r.json()
    assert body["quota"] == "dedicated_cores" and body["limit"] == 1 and body["used"] == 1
    assert "dedicated_cores limit 1, in use 1" in body["detail"]
    assert cloud.create("b", token=alice).status_code == 202
    r = cloud.create("c", token=alice)
    assert r.status_code == 403 and "instances limit 2" in r.json()["detail"]
    mine = cloud.ok("GET", "/quota", alice)
    assert mine["project"] == "p1"
    assert mine["resources"]["instances"] == {"limit": 2, "used": 2}
    assert mine["resources"]["vcpus"] == {"limit": None, "used": 2}
    # resizes count too: a bigger pinned flavor needs one more dedicated core
    cloud.ok(
        "PUT",
        f"/agent/instances/{a['id']}/state",
        token,
        json={"power_state": "running", "task_done": "spawning"},
    )
    cloud.ok(
        "POST", "/flavors", json={"name": "pin2", "vcpus": 2, "memory_mb": 128, "dedicated": True}
    )
    r = cloud.call("POST", f"/instances/{a['id']}/resize", alice, json={"flavor": "pin2"})
    assert r.status_code == 403 and r.json()["quota"] == "dedicated_cores"
    cloud.ok("PATCH", "/projects/p1/quota", json={"dedicated_cores": None})
    assert (
        cloud.call(
            "POST", f"/instances/{a['id']}/resize", alice, json={"flavor": "pin2"}
        ).status_code
        == 202
    )


ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@laptop"
)


def test_ssh_keys_and_key_processes_reach_the_agent(cloud):
    cloud.catalog()
    token = cloud.register("h1")
    image = {"name": "base", "source": "docker", "ref": "dy/base", "key_processes": ["sshd", "web"]}
    cloud.ok("POST", "/images", json=image)
    inst = cloud.ok("POST", "/instances", json={
        "name": "box", "image": "base", "flavor": "small", "network": "net", "ssh_keys": [ED25519],
    })  # fmt: skip
    assert inst["ssh_keys"] == [ED25519] and inst["key_processes"] == ["sshd", "web"]
    desired = cloud.ok("GET", "/agent/hosts/h1/desired", token)
    assert desired["instances"][0]["ssh_keys"] == [ED25519]


def test_a_bad_ssh_key_says_to_give_the_public_one(cloud):
    cloud.catalog()
    cloud.register("h1")
    for bad, says in (
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "not an OpenSSH public key"),
        ("ssh-ed25519 not*base64", "base64"),
        ("ssh-rsa " + ED25519.split()[1], "not a ssh-rsa key"),
    ):
        r = cloud.create("box", ssh_keys=[bad])
        assert r.status_code == 422, bad
        assert "ssh_keys.0" in r.json()["detail"] and says in r.json()["detail"], r.text
        assert ".pub" in r.json()["detail"]
    assert cloud.ok("GET", "/instances") == []


def test_procview_is_off_when_the_image_or_the_flavor_says_so(cloud):
    cloud.catalog()
    token = cloud.register("h1")
    cloud.ok(
        "POST", "/images", json={"name": "plain", "source": "docker", "ref": "x", "procview": False}
    )
    cloud.ok("POST", "/flavors", json={"name": "big", "vcpus": 1, "memory_mb": 256})
    cloud.ok(
        "POST",
        "/instances",
        json={"name": "a", "image": "plain", "flavor": "small", "network": "net"},
    )
    cloud.ok(
        "POST",
        "/instances",
        json={"name": "b", "image": "img", "flavor": "small", "network": "net"},
    )
    a = cloud.ok("GET", "/instances/a")["id"]
    done = {"power_state": "running", "task_done": "spawning"}
    cloud.ok("PUT", f"/agent/instances/{a}/state", token, json=done)
    cloud.ok("POST", "/instances/a/resize", json={"flavor": "big"})  # the image's word outlives it

    def views():
        desired = cloud.ok("GET", "/agent/hosts/h1/desired", token)["instances"]
        return {i["name"]: i["limits"]["procview"] for i in desired}

    assert views() == {"a": False, "b": True}
