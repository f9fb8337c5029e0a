"""Push certificate import (service, API, CLI) and the topic the enrollment uses."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mdmserver.audit.models import AuditEvent
from mdmserver.collaborators import secret_box
from mdmserver.errors import NotFound, UnprocessableEntity
from mdmserver.pki import x509 as px
from mdmserver.push import service
from mdmserver.records.push import PushCertificate
from tests.factories import TOPIC, push_certificate


def pem(cert, key, password: bytes | None = None) -> tuple[bytes, bytes]:
    return px.cert_to_pem(cert).encode(), px.key_to_pem(key, password).encode()


# --- service -------------------------------------------------------------------------------------


def test_no_certificate(db_session):
    assert service.get_push_topic(db_session) is None
    with pytest.raises(NotFound):
        service.require_active_certificate(db_session)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_import_pem_in_one_file(db_session, kind):
    cert, key = push_certificate(kind=kind)
    cert_pem, key_pem = pem(cert, key)
    row = service.import_push_certificate(db_session, cert_pem + key_pem, box=secret_box())
    assert row.topic == TOPIC and row.active
    assert service.get_push_topic(db_session) == TOPIC
    assert row.fingerprint_sha256 == px.fingerprint_sha256(cert)
    assert key_pem not in row.encrypted_key
    identity = service.push_identity(db_session, box=secret_box())
    assert identity is not None and identity.topic == TOPIC
    assert px.public_key_pem(px.key_from_pem(identity.key_pem)) == px.public_key_pem(cert)


def test_import_pem_in_two_files_with_encrypted_key(db_session):
    cert, key = push_certificate()
    cert_pem, key_pem = pem(cert, key, b"pw")
    with pytest.raises(UnprocessableEntity, match="encrypted"):
        service.import_push_certificate(db_session, cert_pem, key_pem, box=secret_box())
    with pytest.raises(UnprocessableEntity, match="wrong password"):
        service.import_push_certificate(db_session, cert_pem, key_pem, b"nope", box=secret_box())
    row = service.import_push_certificate(db_session, cert_pem, key_pem, b"pw", box=secret_box())
    assert row.topic == TOPIC


def test_import_pkcs12(db_session):
    cert, key = push_certificate()
    blob = px.build_pkcs12(cert, key, password=b"secret", friendly_name=b"push")
    with pytest.raises(UnprocessableEntity, match="password is wrong"):
        service.import_push_certificate(db_session, blob, None, b"bad", box=secret_box())
    with pytest.raises(UnprocessableEntity):
        service.import_push_certificate(db_session, blob, None, None, box=secret_box())
    assert service.import_push_certificate(db_session, blob, None, b"secret", box=secret_box()).topic == TOPIC


def test_import_der_certificate_with_key_file(db_session):
    cert, key = push_certificate()
    row = service.import_push_certificate(db_session, px.cert_to_der(cert), pem(cert, key)[1], box=secret_box())
    assert row.topic == TOPIC


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: (b"", None), "empty"),
        (lambda: (b"garbage bytes", None), "not a PEM certificate or a PKCS#12"),
        (lambda: (b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n", None), "no readable certificate"),
        (lambda: (pem(*push_certificate())[0], None), "no private key"),
        (lambda: (pem(*push_certificate())[0], b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
         "cannot be read"),
        (lambda: (pem(push_certificate()[0], push_certificate()[1])[0], pem(*push_certificate())[1]), "does not belong"),
        (lambda: pem(*push_certificate(topic=None)), "no UID"),
        (lambda: pem(*push_certificate(topic="com.example.not-mdm")), "not an MDM topic"),
        (lambda: pem(*push_certificate(days=-1, not_before_days=30)), "expired"),
        (lambda: (b"\x30\x82\x01\x00garbage", b"not a key"), "cannot be read"),
    ],
)
def test_bad_uploads_are_422(db_session, build, message):
    data, key = build()
    with pytest.raises(UnprocessableEntity, match=message):
        service.import_push_certificate(db_session, data, key, box=secret_box())
    assert service.get_push_topic(db_session) is None


def test_new_import_replaces_and_clears_stop(db_session):
    first = service.import_push_certificate(db_session, b"".join(pem(*push_certificate())), box=secret_box())
    service.stop_topic(db_session, first.topic, first.fingerprint_sha256, "BadCertificate")
    assert service.push_identity(db_session, box=secret_box()) is None
    assert "BadCertificate" in service.push_readiness(db_session)
    other_topic = TOPIC.replace("0f0e", "abcd")
    second = service.import_push_certificate(db_session, b"".join(pem(*push_certificate(other_topic))),
                                             box=secret_box(), replace_topic=True)
    db_session.refresh(first)
    assert not first.active and second.active
    assert service.get_push_topic(db_session) == other_topic
    assert service.push_identity(db_session, box=secret_box()).topic == other_topic
    assert service.push_readiness(db_session) is None


def test_expiry_warning(db_session):
    row = service.import_push_certificate(db_session, b"".join(pem(*push_certificate(days=10))), box=secret_box())
    info = service.certificate_info(row)
    assert info["days_left"] in (9, 10) and "expires in" in info["warning"]
    later = service.certificate_info(row, now=row.not_after + dt.timedelta(days=1))
    assert "expired" in later["warning"]
    fresh = service.import_push_certificate(db_session, b"".join(pem(*push_certificate(days=300))), box=secret_box())
    assert service.certificate_info(fresh)["warning"] is None


# --- API -------------------------------------------------------------------------------------------


def test_get_without_certificate_is_404(client, auth):
    response = client.get("/api/v1/push_certificate", headers=auth("read"))
    assert response.status_code == 404
    assert "push-cert import" in response.json["errors"][0]["detail"]


@pytest.mark.parametrize("scopes,status", [((), 401), (("read", "write"), 403), (("secrets",), 403), (("admin",), 200)])
def test_put_needs_admin(client, auth, scopes, status):
    headers = auth(*scopes) if scopes else {}
    body = b"".join(pem(*push_certificate()))
    response = client.put("/api/v1/push_certificate", data=body, headers={**headers, "Content-Type": "application/x-pem-file"})
    assert response.status_code == status


def test_put_multipart_then_get(client, auth, db_session):
    cert, key = push_certificate(days=20)
    cert_pem, key_pem = pem(cert, key, b"pw")
    response = client.put(
        "/api/v1/push_certificate",
        data={"file": (io.BytesIO(cert_pem), "push.pem"), "key": (io.BytesIO(key_pem), "push.key"), "password": "pw"},
        headers=auth("admin"),
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.json
    attributes = response.json["data"]["attributes"]
    assert attributes["topic"] == TOPIC and attributes["not_after"].endswith("Z")
    assert "expires in" in response.json["meta"]["warning"]
    text = json.dumps(response.json)
    assert "PRIVATE KEY" not in text and "encrypted" not in text
    shown = client.get("/api/v1/push_certificate", headers=auth("read"))
    assert shown.status_code == 200
    assert shown.json["data"]["attributes"]["days_left"] in (19, 20)
    assert "PRIVATE KEY" not in shown.get_data(as_text=True)
    events = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "push_certificate:import")).all()
    assert len(events) == 1 and events[0].details["topic"] == TOPIC


def test_put_raw_pkcs12_with_password_header(client, auth):
    cert, key = push_certificate()
    blob = px.build_pkcs12(cert, key, password=b"s3", friendly_name=b"push")
    headers = {**auth("admin"), "Content-Type": "application/x-pkcs12"}
    bad = client.put("/api/v1/push_certificate", data=blob, headers={**headers, "X-Certificate-Password": "no"})
    assert bad.status_code == 422 and bad.json["errors"][0]["source"]["pointer"] == "/file"
    good = client.put("/api/v1/push_certificate", data=blob, headers={**headers, "X-Certificate-Password": "s3"})
    assert good.status_code == 200


@pytest.mark.parametrize(
    "kwargs,status",
    [
        ({"data": b""}, 400),
        ({"data": {"other": (io.BytesIO(b"x"), "x")}, "content_type": "multipart/form-data"}, 400),
        ({"data": b"not a certificate"}, 422),
        ({"data": {"file": (io.BytesIO(b"junk"), "p.pem")}, "content_type": "multipart/form-data"}, 422),
    ],
)
def test_put_bad_bodies(client, auth, kwargs, status):
    response = client.put("/api/v1/push_certificate", headers=auth("admin"), **kwargs)
    assert response.status_code == status
    assert response.json["errors"][0]["status"] == str(status)


def test_enrollment_sees_imported_topic(client, auth, db_session):
    """The device-protocol side reads the topic through get_push_topic."""
    client.put("/api/v1/push_certificate", data=b"".join(pem(*push_certificate())),
               headers={**auth("admin"), "Content-Type": "application/x-pem-file"})
    assert service.get_push_topic(db_session) == TOPIC


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_import(app, db_session, tmp_path):
    from mdmserver.push.cli import push_cert_group

    cert, key = push_certificate()
    blob = px.build_pkcs12(cert, key, password=b"pw", friendly_name=b"push")
    (tmp_path / "push.p12").write_bytes(blob)
    cert_pem, key_pem = pem(cert, key)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    runner = CliRunner()
    with app.app_context():
        wrong = runner.invoke(push_cert_group, ["import", str(tmp_path / "push.p12"), "--password", "x"])
        assert wrong.exit_code == 1 and "password is wrong" in wrong.output
        ok = runner.invoke(push_cert_group, ["import", str(tmp_path / "push.p12"), "--password", "pw"])
        assert ok.exit_code == 0, ok.output
        assert TOPIC in ok.output
        ok2 = runner.invoke(push_cert_group, ["import", str(tmp_path / "cert.pem"), "--key", str(tmp_path / "key.pem")])
        assert ok2.exit_code == 0, ok2.output
        shown = runner.invoke(push_cert_group, ["show"])
        assert shown.exit_code == 0 and TOPIC in shown.output
    rows = db_session.scalars(select(PushCertificate)).all()
    assert [r.active for r in rows] == [False, True]
