"""The certificate of a host's /metrics: signed by the metrics CA (never the cloud's), for
the one address the server decides, for server authentication only."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509

from dockyard import pki


def _ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls).value


def test_the_server_signs_for_the_address_it_decided_only_and_server_auth_only(tmp_path):
    ca, ca_key = pki.ensure_metrics_ca(tmp_path)
    key, csr = pki.host_key_and_csr("lab1")
    pem = pki.sign_host_cert(ca, ca_key, csr, "lab1", "198.18.0.12")
    cert = x509.load_pem_x509_certificate(pem)
    names = _ext(cert, x509.SubjectAlternativeName)
    assert names.get_values_for_type(x509.DNSName) == []  # no name: the address only
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("198.18.0.12")]
    assert list(_ext(cert, x509.ExtendedKeyUsage)) == [x509.OID_SERVER_AUTH]
    assert _ext(cert, x509.BasicConstraints).ca is False
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.read_bytes()))
    assert b"PRIVATE KEY" in key


def test_the_metrics_ca_is_not_the_clouds_and_signs_servers_only(tmp_path):
    cloud_ca, _ = pki.ensure_ca(tmp_path)
    metrics_ca, metrics_key = pki.ensure_metrics_ca(tmp_path)
    assert metrics_ca == tmp_path / "metrics-ca.pem" and metrics_key.stat().st_mode & 0o077 == 0
    assert metrics_ca.read_bytes() != cloud_ca.read_bytes()
    ca_cert = x509.load_pem_x509_certificate(metrics_ca.read_bytes())
    assert list(_ext(ca_cert, x509.ExtendedKeyUsage)) == [x509.OID_SERVER_AUTH]
    _, csr = pki.host_key_and_csr("lab1")
    pem = pki.sign_host_cert(metrics_ca, metrics_key, csr, "lab1", "127.0.0.1")
    # a client that trusts the cloud's CA (the CLI, agents) does not trust this one
    assert pki.issued_by(pem, metrics_ca.read_bytes())
    assert not pki.issued_by(pem, cloud_ca.read_bytes())
    assert pki.ensure_metrics_ca(tmp_path) == (metrics_ca, metrics_key)  # kept
    assert metrics_ca.read_bytes() == x509.load_pem_x509_certificate(
        metrics_ca.read_bytes()
    ).public_bytes(pki.serialization.Encoding.PEM)


def test_a_request_that_is_no_csr_or_an_address_that_is_no_ip_is_refused(tmp_path):
    ca, ca_key = pki.ensure_metrics_ca(tmp_path)
    with pytest.raises(pki.BadCsr, match="not a PEM CSR"):
        pki.sign_host_cert(ca, ca_key, b"-----BEGIN NOTHING-----", "lab1", "198.18.0.12")
    _, csr = pki.host_key_and_csr("lab1")
    with pytest.raises(pki.BadCsr, match="not an IP address"):
        pki.sign_host_cert(ca, ca_key, csr, "lab1", "server.example")
