"""A joined host's agent makes its dockerd trust the cloud's CA for each registry."""

from __future__ import annotations

from pathlib import Path

from dockyard.compute.drivers.docker_images import trust_registry

SOURCE = "198.18.0.1:5001/dockyard/web@sha256:" + "a" * 64


def test_the_ca_goes_to_certs_d_for_the_registry_of_the_pull(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    trust_registry(tmp_path / "certs.d", ca, SOURCE)
    written = tmp_path / "certs.d" / "198.18.0.1:5001" / "ca.crt"
    assert written.read_text() == ca.read_text()
    assert [p.name for p in written.parent.iterdir()] == ["ca.crt"]  # no partial file left


def test_a_ca_already_there_is_kept(tmp_path: Path) -> None:
    mine = tmp_path / "certs.d" / "198.18.0.1:5001" / "ca.crt"
    mine.parent.mkdir(parents=True)
    mine.write_text("the operator's\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("the cloud's\n")
    trust_registry(tmp_path / "certs.d", ca, SOURCE)
    assert mine.read_text() == "the operator's\n"
