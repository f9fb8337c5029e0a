"""Every failure is a JSON:API error document with the request id; never a leak of internals."""

from __future__ import annotations

import re

import pytest

from mdmserver.app import create_app
from mdmserver.pki.cms import CMSError
from mdmserver.profiles.plist import ProfileError
from mdmserver.protocol.plist import ProtocolError, load_dict


def _error(response, status: int) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/vnd.api+json"
    body = response.get_json()
    assert body["meta"]["request_id"] == response.headers["X-Request-ID"]
    assert body["errors"][0]["status"] == str(status)
    return body["errors"][0]


def test_request_id_is_echoed(client, auth):
    response = client.get("/api/v1/organization", headers={**auth("read"), "X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"


def test_invalid_request_id_is_replaced(client):
    response = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces\u00e9"})
    assert response.headers["X-Request-ID"] != "bad id with spaces\u00e9"
    assert len(response.headers["X-Request-ID"]) == 32


def test_unknown_route_is_404(client, auth):
    assert "/api/v1/nowhere" in _error(client.get("/api/v1/nowhere", headers=auth("read")), 404)["detail"]
    _error(client.get("/nowhere"), 404)


def test_wrong_method_is_405(client, auth):
    response = client.delete("/api/v1/organization", headers=auth("write"))
    _error(response, 405)
    assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize(
    "query,parameter",
    [
        ("page[size]=0", "page[size]"),
        ("page[size]=501", "page[size]"),
        ("page[size]=abc", "page[size]"),
        ("page[number]=0", "page[number]"),
        ("page[cursor]=1", "page[cursor]"),
        ("filter[nope]=1", "filter[nope]"),
        ("sort=-nope", "sort"),
        ("bogus=1", "bogus"),
    ],
)
def test_bad_list_parameters_are_400(client, auth, query, parameter):
    error = _error(client.get(f"/api/v1/certificates?{query}", headers=auth("read")), 400)
    assert error["source"]["parameter"] == parameter


def test_bad_json_is_400(client, auth):
    response = client.patch(
        "/api/v1/organization", data="{not json", headers={**auth("write"), "Content-Type": "application/vnd.api+json"}
    )
    _error(response, 400)


def test_wrong_media_type_is_415(client, auth):
    response = client.patch("/api/v1/organization", data="name=x", headers={**auth("write"),
                            "Content-Type": "application/x-www-form-urlencoded"})
    _error(response, 415)


def test_oversized_admin_body_is_413(client, auth, app):
    limit = app.config["MAX_UPLOAD_BYTES"]
    response = client.patch("/api/v1/organization", data=b"x" * (limit + 1),
                            headers={**auth("write"), "Content-Type": "application/json"})
    _error(response, 413)


def test_unexpected_exception_is_a_generic_500(tmp_path, caplog):
    app = create_app(overrides={"data_dir": str(tmp_path), "log_level": "WARNING"}, environ={})

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals /etc/passwd")

    response = app.test_client().get("/boom", headers={"X-Request-ID": "req-500"})
    error = _error(response, 500)
    assert "secret internals" not in response.get_data(as_text=True)
    assert "req-500" in error["detail"] or response.get_json()["meta"]["request_id"] == "req-500"
    assert any("unhandled error" in r.getMessage() and getattr(r, "request_id", None) == "req-500"
               for r in caplog.records)


def test_ids_no_row_can_have_are_404_on_every_route(app, client, auth):
    """Huge or non-ASCII numeric ids never reach the database as an overflow (500)."""
    headers = auth("admin")
    checked = 0
    for rule in app.url_map.iter_rules():
        if "<int:" not in rule.rule:
            continue
        for bad in ("99999999999999999999", "2147483648", "\u00b2"):
            path = re.sub(r"<int:[^>]+>", bad, rule.rule)
            path = re.sub(r"<(?:[^:>]+:)?[^>]+>", "x", path)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                response = client.open(path, method=method, headers=headers)
                assert response.status_code < 500, (method, path, response.status_code)
                checked += 1
    assert checked > 20


# --- input refused by a pure layer: one translation in the error handler ------------------------------


@pytest.fixture
def raising_app(tmp_path):
    """An app with one admin route and one device route that raise what the test gives them."""
    app = create_app(overrides={"data_dir": str(tmp_path), "log_level": "WARNING"}, environ={})
    raised: list[Exception] = []

    def _raise():
        raise raised[0]

    app.add_url_rule("/raise", "raise_admin", _raise)
    app.add_url_rule("/mdm/raise", "raise_device", _raise)
    app.extensions["test.raised"] = raised
    return app


def _raising(app, exc: Exception, path: str, request_id: str = "req-input"):
    app.extensions["test.raised"][:] = [exc]
    return app.test_client().get(path, headers={"X-Request-ID": request_id})


@pytest.mark.parametrize(
    "exc,status,code,title,pointer",
    [
        (ProtocolError("not a property list: bad header"), 400, "bad_request", "Bad Request", None),
        (ProtocolError("property list larger than 10 bytes", status=413), 413, "payload_too_large",
         "Payload Too Large", None),
        (ProfileError("shared references are not allowed", pointer="/PayloadContent/1", code="shared_reference"),
         422, "shared_reference", "Unprocessable Entity", "/PayloadContent/1"),
        (ProfileError("the profile is larger than 9 bytes", status=413, code="too_large"), 413, "too_large",
         "Payload Too Large", None),
        (CMSError("digest mismatch"), 422, "bad_signature", "Unprocessable Entity", None),
    ],
)
def test_pure_layer_errors_become_one_jsonapi_error(raising_app, exc, status, code, title, pointer):
    response = _raising(raising_app, exc, "/raise")
    error = _error(response, status)
    assert response.get_json()["meta"]["request_id"] == "req-input"
    assert error["code"] == code
    assert error["title"] == title
    assert error["detail"] == exc.detail
    assert error.get("source", {}).get("pointer") == pointer


@pytest.mark.parametrize(
    "exc,status",
    [
        (ProtocolError("unknown MessageType 'Nope'"), 400),
        (ProtocolError("property list larger than 10 bytes", status=413), 413),
        (CMSError("digest mismatch"), 422),
    ],
)
def test_pure_layer_errors_on_the_device_channel_are_plain_statuses(raising_app, exc, status):
    """Devices get the status and a one-line plain-text reason: no JSON:API document, never a 401."""
    response = _raising(raising_app, exc, "/mdm/raise")
    assert response.status_code == status
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == exc.detail + "\n"


def test_a_device_body_that_is_not_a_plist_is_400_plain_text(raising_app):
    """The real loader on a device route: its ProtocolError reaches the handler unchanged."""
    raising_app.add_url_rule("/mdm/parse", "parse_device", lambda: load_dict(b"<plist><dict><key>x</key>"))
    response = raising_app.test_client().get("/mdm/parse")
    assert response.status_code == 400
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True).startswith("malformed XML property list")
