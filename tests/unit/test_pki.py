"""The CA, the server certificate and the CA's pin (what `host add` prints and a
joining agent checks)."""

from __future__ import annotations

import hashlib
import ssl
import subprocess

import pytest

from dockyard import pki


def _openssl_pin(pem_path) -> str:
    """The pin as kubeadm's documentation computes it, with openssl."""
    pub = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(pem_path)],
        check=True,
        capture_output=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, check=True, capture_output=True
    ).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest()


def test_the_pin_is_the_sha256_of_the_cas_subject_public_key_info(tmp_path):
    ca, key = pki.ensure_ca(tmp_path / "tls")
    assert pki.ca_hash(ca.read_bytes()) == _openssl_pin(ca)
    pki.check_ca(ca.read_bytes(), _openssl_pin(ca).upper().replace("SHA256:", "sha256:"))


def test_a_ca_that_is_not_pinned_is_refused_saying_what_to_do(tmp_path):
    ours, _ = pki.ensure_ca(tmp_path / "ours")
    theirs, _ = pki.ensure_ca(tmp_path / "theirs")
    with pytest.raises(pki.PinMismatch, match="nothing was saved.*dockyard host add"):
        pki.check_ca(theirs.read_bytes(), pki.ca_hash(ours.read_bytes()))
    with pytest.raises(pki.PinMismatch, match=r"several certificates \(or none\)"):
        pki.check_ca(b"<html>hello</html>", pki.ca_hash(ours.read_bytes()))


def test_a_bundle_behind_the_pinned_ca_is_refused(tmp_path):
    """The CA is public (GET /v1/ca): a man in the middle could send it with his own
    CA after it; trusting the bundle would trust his."""
    ours, _ = pki.ensure_ca(tmp_path / "ours", "Dockyard CA")
    evil, _ = pki.ensure_ca(tmp_path / "evil", "Evil CA")
    bundle = ours.read_bytes() + evil.read_bytes()
    with pytest.raises(pki.PinMismatch, match="several certificates"):
        pki.check_ca(bundle, pki.ca_hash(ours.read_bytes()))
    assert pki.check_ca(ours.read_bytes(), pki.ca_hash(ours.read_bytes())) == ours.read_bytes()


def test_a_pinned_certificate_that_is_no_ca_is_refused(tmp_path):
    pki.ensure_ca(tmp_path / "tls")
    server = pki.ensure_server_cert(tmp_path / "tls", ["127.0.0.1"]).cert.read_bytes()
    with pytest.raises(pki.PinMismatch, match="not a CA certificate"):
        pki.check_ca(server, pki.ca_hash(server))


def test_keys_are_0600_and_the_ca_is_made_once(tmp_path):
    ca, key = pki.ensure_ca(tmp_path / "tls")
    tls = pki.ensure_server_cert(tmp_path / "tls", ["127.0.0.1", "cloud.example"])
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    assert key.stat().st_mode & 0o777 == 0o600 and tls.key.stat().st_mode & 0o777 == 0o600
    pin = pki.ca_hash(ca.read_bytes())
    pki.ensure_ca(tmp_path / "tls")
    assert pki.ca_hash(ca.read_bytes()) == pin


def test_the_server_certificate_verifies_against_the_ca_for_its_names_only(tmp_path):
    tls = pki.ensure_server_cert(tmp_path / "tls", ["127.0.0.1", "cloud.example"])
    first = tls.cert.read_bytes()
    assert pki.ensure_server_cert(tmp_path / "tls", ["127.0.0.1", "cloud.example"]) == tls
    assert tls.cert.read_bytes() == first  # same names: kept
    out = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tls.ca), "-verify_ip", "127.0.0.1", str(tls.cert)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tls.ca), "-verify_ip", "10.0.0.1", str(tls.cert)],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    pki.ensure_server_cert(tmp_path / "tls", ["10.0.0.1"])
    assert tls.cert.read_bytes() != first  # new names: issued again
    ssl.create_default_context(cafile=str(tls.ca)).load_cert_chain(tls.cert, tls.key)


def test_a_certificate_near_its_end_is_issued_again(tmp_path, monkeypatch):
    names = ["127.0.0.1"]
    tls = pki.ensure_server_cert(tmp_path / "tls", names)
    first = tls.cert.read_bytes()
    monkeypatch.setattr(pki, "RENEW_DAYS", pki.SERVER_DAYS + 1)  # as if it ended soon
    pki.ensure_server_cert(tmp_path / "tls", names)
    assert tls.cert.read_bytes() != first


def test_a_certificate_of_an_earlier_ca_is_issued_again_by_the_new_one(tmp_path):
    names = ["127.0.0.1"]
    tls = pki.ensure_server_cert(tmp_path / "tls", names)
    tls.ca.unlink()  # the admin made the CA anew (its key too)
    (tmp_path / "tls" / "ca.key").unlink()
    again = pki.ensure_server_cert(tmp_path / "tls", names)
    out = subprocess.run(
        ["openssl", "verify", "-CAfile", str(again.ca), str(again.cert)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
