"""The certificate of a host's /metrics: signed for the names the server decides."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509

from dockyard import pki


def test_the_server_signs_for_the_host_and_the_address_it_saw_only(tmp_path):
    ca, ca_key = pki.ensure_ca(tmp_path)
    key, csr = pki.host_key_and_csr("lab1")
    pem = pki.sign_host_cert(ca, ca_key, csr, ["lab1", "198.18.0.12"])
    cert = x509.load_pem_x509_certificate(pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["lab1"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("198.18.0.12")]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.read_bytes()))
    assert b"PRIVATE KEY" in key


def test_a_request_that_is_no_csr_is_refused(tmp_path):
    ca, ca_key = pki.ensure_ca(tmp_path)
    with pytest.raises(pki.BadCsr, match="not a PEM CSR"):
        pki.sign_host_cert(ca, ca_key, b"-----BEGIN NOTHING-----", ["lab1", "198.18.0.12"])
