"""Shared PKI test material: a CA, identities issued by it, and foreign signers."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from mdmserver.pki import x509 as px


@dataclass
class Identity:
    cert: px.Certificate
    key: object

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cert_path = directory / f"{stem}.crt"
        key_path = directory / f"{stem}.key"
        cert_path.write_text(px.cert_to_pem(self.cert))
        key_path.write_text(px.key_to_pem(self.key))
        return cert_path, key_path


def make_ca(name: str = "mdmserver test CA", kind: str = "rsa") -> Identity:
    cert, key = px.create_ca(name, organization="mdmserver tests", key=px.generate_private_key(kind))
    return Identity(cert, key)


def issue(ca: Identity, name: str, *, kind: str = "rsa", usage: str = "client", **kw) -> Identity:
    key = px.generate_private_key(kind)
    cert = px.issue_certificate(
        ca.cert, ca.key, common_name=name, public_key=key.public_key(), usage=usage, **kw
    )
    return Identity(cert, key)


def openssl_sign(
    tmp_path: Path, signer: Identity, body: bytes, *, md: str = "sha256", detached: bool = True,
    extra: list[str] | None = None,
) -> bytes:
    """A CMS SignedData made by the openssl command line tool."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command line tool not installed: cannot test interop signatures")
    cert_path, key_path = signer.write(tmp_path, "signer")
    body_path = tmp_path / "body.bin"
    out_path = tmp_path / "sig.der"
    body_path.write_bytes(body)
    cmd = [
        "openssl", "cms", "-sign", "-binary", "-md", md, "-nosmimecap", "-outform", "DER",
        "-signer", str(cert_path), "-inkey", str(key_path),
        "-in", str(body_path), "-out", str(out_path),
    ]
    if not detached:
        cmd.append("-nodetach")
    cmd += extra or []
    subprocess.run(cmd, check=True, capture_output=True)
    return out_path.read_bytes()
