"""Keys, CA, issued certificates, encodings and PKCS#12."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from mdmserver.pki import x509 as px

from .helpers import issue, make_ca


def test_generate_private_key_kinds():
    assert isinstance(px.generate_private_key(), rsa.RSAPrivateKey)
    assert px.generate_private_key("rsa", 3072).key_size == 3072
    assert isinstance(px.generate_private_key("ec").curve, ec.SECP256R1)
    with pytest.raises(px.PKIError):
        px.generate_private_key("dsa")
    with pytest.raises(px.PKIError):
        px.generate_private_key("rsa", 1024)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_create_ca(kind):
    cert, key = px.create_ca("Test CA", organization="Example", key=px.generate_private_key(kind))
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert px.subject_string(cert) == "CN=Test CA,O=Example"
    assert px.is_issued_by(cert, cert)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > dt.timedelta(days=3649)
    assert px.public_key_pem(cert) == px.public_key_pem(key)


def test_create_ca_makes_a_key_when_none_given():
    cert, key = px.create_ca("Test CA")
    assert isinstance(key, rsa.RSAPrivateKey)
    assert px.public_key_pem(cert) == px.public_key_pem(key.public_key())


@pytest.mark.parametrize(
    "usage,eku",
    [
        ("client", {ExtendedKeyUsageOID.CLIENT_AUTH}),
        ("server", {ExtendedKeyUsageOID.SERVER_AUTH}),
        ("signing", {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CODE_SIGNING}),
    ],
)
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_issue_certificate(usage, eku, kind):
    ca = make_ca(kind=kind)
    other = issue(ca, "leaf", kind=kind, usage=usage, dns_names=["mdm.example.com"])
    cert = other.cert
    assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == eku
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert px.is_issued_by(cert, ca.cert)
    assert px.is_issued_by(cert, ca.cert, at=dt.datetime.now(dt.UTC))
    assert not px.is_issued_by(cert, ca.cert, at=dt.datetime.now(dt.UTC) + dt.timedelta(days=366))
    assert cert.signature_hash_algorithm.name == "sha256"
    if usage == "server":
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["mdm.example.com"]


def test_certificates_never_outlive_their_ca():
    ca_cert, ca_key = px.create_ca("short CA", days=10)
    key = px.generate_private_key("ec")
    cert = px.issue_certificate(ca_cert, ca_key, common_name="x", public_key=key.public_key(), days=365)
    assert cert.not_valid_after_utc <= ca_cert.not_valid_after_utc


def test_serials_are_random_and_positive():
    ca = make_ca()
    serials = {issue(ca, "x", kind="ec").cert.serial_number for _ in range(5)}
    assert len(serials) == 5 and all(s > 0 for s in serials)


def test_unknown_usage_refused():
    ca = make_ca()
    with pytest.raises(px.PKIError):
        issue(ca, "x", usage="ca")


def test_is_issued_by_refuses_impostors():
    ca = make_ca("Same Name")
    impostor = make_ca("Same Name")
    leaf = issue(impostor, "leaf")
    assert not px.is_issued_by(leaf.cert, ca.cert)
    assert px.is_issued_by(leaf.cert, impostor.cert)
    other = make_ca("Other Name")
    assert not px.is_issued_by(leaf.cert, other.cert)


def test_is_issued_by_with_naive_time():
    ca = make_ca()
    leaf = issue(ca, "leaf")
    assert px.is_issued_by(leaf.cert, ca.cert, at=dt.datetime.now(dt.UTC).replace(tzinfo=None))


def test_pem_der_round_trips():
    ca = make_ca()
    pem = px.cert_to_pem(ca.cert)
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert px.cert_from_pem(pem) == ca.cert
    assert px.cert_from_pem(pem.encode()) == ca.cert
    der = px.cert_to_der(ca.cert)
    assert px.cert_from_der(der) == ca.cert
    assert px.load_certificate(der) == ca.cert
    assert px.load_certificate(pem) == ca.cert
    assert px.load_certificate(b"junk\n" + pem.encode()) == ca.cert
    assert len(px.fingerprint_sha256(ca.cert)) == 64
    assert px.fingerprint_sha256(ca.cert) == px.fingerprint_sha256(px.cert_from_der(der))
    assert px.fingerprint_sha256(ca.cert).islower()


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_bad_certificates_raise_pki_error(data):
    with pytest.raises(px.PKIError):
        px.load_certificate(data)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_key_round_trips(kind):
    key = px.generate_private_key(kind)
    pem = px.key_to_pem(key)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert px.public_key_pem(px.key_from_pem(pem)) == px.public_key_pem(key)
    encrypted = px.key_to_pem(key, password=b"s3cret")
    assert "ENCRYPTED" in encrypted
    assert px.public_key_pem(px.key_from_pem(encrypted, b"s3cret")) == px.public_key_pem(key)
    with pytest.raises(px.PKIError):
        px.key_from_pem(encrypted, b"wrong")
    with pytest.raises(px.PKIError):
        px.key_from_pem(encrypted)
    with pytest.raises(px.PKIError):
        px.key_from_pem(pem, b"unneeded")
    with pytest.raises(px.PKIError):
        px.key_from_pem(b"not a key")
    der = px.key_to_pkcs8_der(key)
    assert der[0] == 0x30


def test_pkcs12_round_trip():
    ca = make_ca()
    leaf = issue(ca, "device identity")
    blob = px.build_pkcs12(leaf.cert, leaf.key, password=b"pw", friendly_name=b"identity", ca_certs=[ca.cert])
    cert, key, extra = px.load_pkcs12(blob, b"pw")
    assert cert == leaf.cert
    assert px.public_key_pem(key) == px.public_key_pem(leaf.key)
    assert extra == [ca.cert]
    with pytest.raises(px.PKIError):
        px.load_pkcs12(blob, b"wrong")
    with pytest.raises(px.PKIError):
        px.load_pkcs12(b"garbage", b"pw")


def test_pkcs12_uses_legacy_algorithms_apple_imports(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl command line tool not installed")
    ca = make_ca()
    leaf = issue(ca, "device identity")
    blob = px.build_pkcs12(leaf.cert, leaf.key, password=b"pw", friendly_name=b"identity")
    path = tmp_path / "id.p12"
    path.write_bytes(blob)
    out = subprocess.run(
        ["openssl", "pkcs12", "-in", str(path), "-passin", "pass:pw", "-info", "-noout"],
        capture_output=True, text=True, check=True,
    )
    info = out.stdout + out.stderr
    assert "MAC: sha1" in info
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info
    assert "PBES2" not in info


def test_pkcs12_without_key_refused():
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

    ca = make_ca()
    blob = pkcs12.serialize_key_and_certificates(b"x", None, None, [ca.cert], BestAvailableEncryption(b"pw"))
    with pytest.raises(px.PKIError, match="certificate and its private key"):
        px.load_pkcs12(blob, b"pw")
