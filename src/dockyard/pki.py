"""The cloud's certificate authority: its key pair, the server's certificate, the
CA's pin.

    dockyard up ──► ensure_ca(tls/)          ca.pem, ca.key (0600)
               ├──► ensure_server_cert(...)  server.pem, server.key (0600), for its addresses
               ├──► ensure_server_cert(..., stem="registry")  registry.pem/.key (the
               │                                  registries of `up` and of the lab)
               └──► ensure_metrics_ca(tls/)  metrics-ca.pem, metrics-ca.key (0600): signs
                                             the agents' /metrics certificates only
    dockyard-server --tls-ca ──► ensure_metrics_ca(beside it)   (a cloud made before it)
    dockyard host add ──► ca_hash(ca.pem)    "sha256:<hex>" printed in the join command
    dockyard-agent --join ──► check_ca(pem, pin)   before it trusts anything the server says

The pin is the SHA-256 of the CA certificate's SubjectPublicKeyInfo (DER), as
``kubeadm join --discovery-token-ca-cert-hash`` has it, so it survives the CA
being re-issued with the same key. Only this module imports ``cryptography``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_DAYS, SERVER_DAYS = 3650, 825
RENEW_DAYS = 30  # a server certificate this close to its end is issued again at start


class PinMismatch(ValueError):
    """The CA the server sent is not the one the join command names."""


@dataclass(frozen=True)
class ServerTls:
    """Where ``dockyard-server`` finds its TLS files."""

    ca: Path
    cert: Path
    key: Path


def ca_hash(pem: bytes) -> str:
    """``sha256:<hex>`` of the certificate's SubjectPublicKeyInfo DER."""
    cert = x509.load_pem_x509_certificate(pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def check_ca(pem: bytes, pin: str) -> bytes:
    """The one CA certificate in ``pem`` (PEM), if its pin is ``pin``; else PinMismatch.

    A bundle is refused: a client trusts every certificate it is given, so a
    man in the middle could add its own CA behind the pinned (public) one."""
    if pem.count(b"-----BEGIN CERTIFICATE-----") != 1:
        raise PinMismatch(
            "the server sent several certificates (or none) as its CA; a join trusts exactly "
            "one, the pinned one: nothing was saved. Check the URL"
        )
    try:
        cert = x509.load_pem_x509_certificate(pem)
        got = ca_hash(pem)
    except ValueError as exc:
        raise PinMismatch(f"the server's CA is not a PEM certificate: {exc}") from exc
    if got != pin.strip().lower():
        raise PinMismatch(
            f"the server's CA has hash {got}, not {pin}: this is not the server the join "
            "command was made for (or the hash was mistyped); nothing was saved. Check the "
            "URL, or ask an admin for the command again (`dockyard host add NAME`)"
        )
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise PinMismatch("the pinned certificate is not a CA certificate: nothing was saved")
    return cert.public_bytes(serialization.Encoding.PEM)


def ensure_ca(
    directory: Path, name: str = "Dockyard CA", stem: str = "ca", server_only: bool = False
) -> tuple[Path, Path]:
    """STEM.pem and STEM.key in ``directory`` (0700, key 0600); kept when they exist.
    ``server_only``: the CA certificate itself says it signs server certificates only
    (extended key usage serverAuth, which Go's verifier, Prometheus's, enforces down
    the chain)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        _builder(subject, subject, key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if server_only:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False
        )
    cert = builder.sign(key, hashes.SHA256())
    _write_secret(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


METRICS_CA = "metrics-ca"  # STEM of the metrics CA's files, beside the cloud's ca.pem


def ensure_metrics_ca(directory: Path) -> tuple[Path, Path]:
    """metrics-ca.pem and metrics-ca.key in ``directory`` (beside the cloud's CA), made
    when absent. It signs the agents' /metrics certificates and nothing else: only
    Prometheus trusts it, so a host credential that gets a certificate from it cannot
    pass as the API server (or a registry) to clients, which trust the cloud's CA."""
    return ensure_ca(directory, "Dockyard metrics CA", stem=METRICS_CA, server_only=True)


def issued_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """``ca_pem`` signed ``cert_pem`` (False for anything unreadable)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def ensure_server_cert(directory: Path, names: list[str], stem: str = "server") -> ServerTls:
    """STEM.pem/STEM.key signed by the CA in ``directory`` for ``names`` (DNS names
    and IP addresses); issued again when the names changed, when it ends within
    RENEW_DAYS, or when another CA signed it (the CA was made anew). ``stem``: one
    certificate per service ("server" for the API, "registry" for the registries)."""
    ca_path, ca_key_path = ensure_ca(directory)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    wanted = _alt_names(names)
    ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    if cert_path.exists() and key_path.exists() and _still_good(cert_path, ca_cert, wanted):
        return ServerTls(ca_path, cert_path, key_path)
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "dockyard")]
    )
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), SERVER_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sorted(wanted, key=str)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_secret(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ServerTls(ca_path, cert_path, key_path)


class BadCsr(ValueError):
    """A certificate request that is not PEM, not signed by its own key, or not EC."""


def host_key_and_csr(host: str) -> tuple[bytes, bytes]:
    """A new key pair for a host's /metrics and a certificate request for it (PEM both)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def sign_host_cert(ca: Path, ca_key: Path, csr_pem: bytes, host: str, address: str) -> bytes:
    """A certificate (PEM) for the CSR's key, named ``host`` (its CN) and valid for the IP
    ``address`` only (the one subject alternative name: what the server decided, never
    what the request asks for, and no DNS name), server authentication only, signed by
    the CA (the metrics CA: ensure_metrics_ca). A bad CSR, or an address that is no IP
    address: BadCsr."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise BadCsr(f"{address!r} is not an IP address to sign a certificate for") from exc
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise BadCsr("the certificate request is not a PEM CSR") from exc
    public = csr.public_key()
    if not csr.is_signature_valid or not isinstance(public, ec.EllipticCurvePublicKey):
        raise BadCsr("the certificate request must be an EC key's, signed by it")
    ca_cert = x509.load_pem_x509_certificate(ca.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        _builder(subject, ca_cert.subject, public, SERVER_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def write_secret(path: Path, data: bytes) -> None:
    """``data`` in ``path``, 0600 from the first byte."""
    _write_secret(path, data)


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    start = datetime.now(UTC) - timedelta(minutes=5)  # a host whose clock is a bit behind
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
    )


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _alt_names(names: list[str]) -> set[x509.GeneralName]:
    out: set[x509.GeneralName] = set()
    for name in names:
        try:
            out.add(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.add(x509.DNSName(name))
    return out


def _still_good(cert_path: Path, ca_cert: x509.Certificate, wanted: set[x509.GeneralName]) -> bool:
    """The certificate names ``wanted``, is not near its end and ``ca_cert`` signed it."""
    pem = cert_path.read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    if cert.not_valid_after_utc - datetime.now(UTC) < timedelta(days=RENEW_DAYS):
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return _names_of(pem) == wanted


def _names_of(pem: bytes) -> set[x509.GeneralName]:
    cert = x509.load_pem_x509_certificate(pem)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return set(ext.value)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_secret(path: Path, data: bytes) -> None:
    """Written 0600 from the first byte (never readable by others, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
