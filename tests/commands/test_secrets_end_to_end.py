"""Secrets never at rest in plaintext and never shown to a ``read`` token (issue 9, item 3).

The full flow over real HTTP with a simulated Mac: a profile with a unique marker in many secret
fields is uploaded and installed through an assignment, a lock with a PIN, firmware and recovery-lock
passwords are sent, and the device answers the Activation Lock bypass code and its escrowed FileVault
key with markers. Then every text and binary column of every table (whatever the schema holds, read
from the database's own catalogue) is scanned for the markers, in plaintext and in base64; every GET
route of the API is walked with a ``read`` token; and a ``secrets`` token gets the real values back.
"""

from __future__ import annotations

import base64
import io
import json
import plistlib
import re
import uuid

import httpx
import pytest
import sqlalchemy as sa

from mdmserver.db import db
from mdmserver.simulator.device import HttpxTransport, SimulatedDevice
from tests.factories import install_push_topic

ADM = "/api/management/v1/admission"


@pytest.fixture
def live(live_server, monkeypatch):
    monkeypatch.setitem(live_server.app.config, "ENROLL_RATE_LIMIT", 0)
    with live_server.app.app_context():
        install_push_topic(db.session, monkeypatch)
    return live_server


def _marker(name: str) -> str:
    return f"SECRET{name}x{uuid.uuid4().hex[:10]}"


def _payload(payload_type: str, **keys) -> dict:
    return {"PayloadType": payload_type, "PayloadVersion": 1, "PayloadUUID": str(uuid.uuid4()).upper(),
            "PayloadIdentifier": f"com.example.secrets.{uuid.uuid4().hex[:8]}", **keys}


def _secret_profile(m: dict[str, str]) -> dict:
    """A profile with a marker in every secret field we plant (top level, nested, data, unknown keys)."""
    return {
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.secrets",
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": "Secrets everywhere",
        "PayloadContent": [
            _payload("com.apple.wifi.managed", SSID_STR="Office", Password=m["wifi"], ProxyType="Manual",
                     ProxyServer="proxy.example.com", ProxyPassword=m["wifiproxy"],
                     EAPClientConfiguration={"UserName": "u", "UserPassword": m["eap"]}),
            _payload("com.apple.vpn.managed", VPNType="IPSec", UserDefinedName="VPN",
                     IPSec={"RemoteAddress": "vpn.example.com", "XAuthName": "u", "XAuthPassword": m["xauth"],
                            "SharedSecret": m["psk"].encode(), "AuthenticationMethod": "SharedSecret"},
                     Proxies={"HTTPEnable": 1, "HTTPProxyPassword": m["vpnproxy"]}),
            _payload("com.apple.proxy.http.global", ProxyType="Manual", ProxyServer="p.example.com",
                     ProxyServerPort=8080, ProxyPassword=m["globalproxy"]),
            _payload("com.apple.caldav.account", CalDAVHostName="cal.example.com", CalDAVPassword=m["caldav"]),
            _payload("com.apple.carddav.account", CardDAVHostName="card.example.com", CardDAVPassword=m["carddav"]),
            _payload("com.apple.subscribedcalendar.account", SubCalAccountHostName="https://c.example.com/x.ics",
                     SubCalAccountPassword=m["subcal"]),
            _payload("com.apple.ldap.account", LDAPAccountHostName="ldap.example.com",
                     LDAPAccountPassword=m["ldap"]),
            _payload("com.apple.eas.account", EmailAddress="a@example.com", Host="eas.example.com",
                     Password=m["eas"], Certificate=m["easp12"].encode(), CertificatePassword=m["easp12pw"]),
            _payload("com.apple.loginwindow", AutologinUsername="kiosk", AutologinPassword=m["autologin"]),
            _payload("com.apple.mail.managed", EmailAccountType="EmailTypeIMAP", IncomingMailServerHostName="i",
                     IncomingPassword=m["imap"], OutgoingPassword=m["smtp"]),
            _payload("com.apple.security.pkcs12", Password=m["p12pw"], PayloadContent=m["p12"].encode()),
            _payload("com.apple.security.scep", PayloadContent={"URL": "https://scep.example.com",
                                                                "Challenge": m["scep"]}),
            _payload("com.apple.airplay", Passwords=[{"DeviceName": "TV", "Password": m["airplay"]}]),
            _payload("com.example.vendor.app", VendorPassword=m["vendor"], Settings={"ApiSecret": m["vendor2"]}),
            _payload("com.apple.profileRemovalPassword", RemovalPassword=m["removal"]),
        ],
    }


def _b64_forms(secret: bytes) -> list[bytes]:
    """What ``secret`` looks like inside any base64 text, at each of the three alignments."""
    forms = []
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + secret)
        start = (pad * 4 + 2) // 3 + (1 if pad else 0)
        forms.append(encoded[start:-4])
    return forms


def _needles(markers: list[str]) -> dict[bytes, str]:
    out: dict[bytes, str] = {}
    for marker in markers:
        raw = marker.encode()
        out[raw] = marker
        for form in _b64_forms(raw):
            out[form] = f"base64 of {marker}"
    return out


def _as_bytes(value) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dict | list):
        return json.dumps(value).encode()
    return str(value).encode()


def _scan_database(app, needles: dict[bytes, str]) -> tuple[list[str], int]:
    """Every column of every table the database has (from its own catalogue): (findings, tables)."""
    findings = []
    with app.app_context():
        with db.engine.connect() as connection:
            inspector = sa.inspect(connection)
            tables = inspector.get_table_names()
            for table in tables:
                columns = [c["name"] for c in inspector.get_columns(table)]
                quoted = ", ".join(f'"{c}"' for c in columns)
                for row in connection.execute(sa.text(f'SELECT {quoted} FROM "{table}"')):
                    for column, value in zip(columns, row, strict=True):
                        data = _as_bytes(value)
                        if re.fullmatch(rb"[0-9a-f]{64}", data):
                            continue  # a SHA-256/HMAC hex digest holds no plaintext; a 6-digit PIN may occur in one by chance
                        unwrapped = re.sub(rb"\s+", b"", data)  # base64 in XML plists is wrapped
                        for needle, what in needles.items():
                            if needle in data or needle in unwrapped:
                                findings.append(f"{table}.{column}: {what}")
    return findings, len(tables)


def _fill(rule, ids: dict[str, list[str]]) -> list[str]:
    """Concrete paths for a URL rule from the ids of this flow (an argument we have no id for: skipped)."""
    paths = [rule.rule]
    for arg in rule.arguments:
        values = ids.get(arg)
        if values is None:
            return []
        paths = [p.replace(f"<{arg}>", v).replace(f"<int:{arg}>", v) for p in paths for v in values]
    return [p for p in paths if "<" not in p]


def test_secrets_are_sealed_at_rest_hidden_from_read_and_given_to_secrets(live):
    names = ["wifi", "wifiproxy", "eap", "xauth", "psk", "vpnproxy", "globalproxy", "caldav", "carddav", "subcal",
             "ldap", "eas", "easp12", "easp12pw", "autologin", "imap", "smtp", "p12pw", "p12", "scep", "airplay",
             "vendor", "vendor2", "removal"]
    m = {name: _marker(name) for name in names}
    lock_pin, firmware, recovery = _marker("lockpin"), _marker("firmware"), _marker("recovery")
    action_pin = "973158"
    bypass, filevault = _marker("bypass"), _marker("filevault")
    markers = [*m.values(), lock_pin, firmware, recovery, bypass, filevault]

    api = httpx.Client(base_url=live.url, headers=live.auth("read", "write"), timeout=60)
    reader = httpx.Client(base_url=live.url, headers=live.auth("read"), timeout=60)
    keeper = httpx.Client(base_url=live.url, headers=live.auth("read", "secrets"), timeout=60)

    mac = SimulatedDevice(HttpxTransport(live.url), platform="macos", seed=901,
                          activation_lock_bypass_code=bypass, filevault_recovery_key_cms=filevault.encode())
    mac.enroll()
    assert mac.authenticate() == 200
    auth_set = next(a for a in api.get(f"{ADM}/devices?status=pending").json()
                    if json.loads(a["device_identity"])["udid"] == mac.udid)
    assert api.put(f"{ADM}/devices/{auth_set['id']}/status", json={"status": "accepted"}).status_code == 200
    assert mac.token_update() == 200
    device_id = api.get(f"/api/v1/devices/{mac.udid}").json()["data"]["id"]

    # the profile, uploaded and installed through an assignment
    profile = _secret_profile(m)
    uploaded = api.post("/api/v1/upload/profiles", files={
        "file": ("secrets.mobileconfig", io.BytesIO(plistlib.dumps(profile)), "application/octet-stream")})
    assert uploaded.status_code == 201, uploaded.text
    profile_id = uploaded.json()["data"]["id"]
    assigned = api.post(f"/api/v1/profiles/{profile_id}/assignments", json={"devices": [int(device_id)]})
    assert assigned.status_code == 200 and assigned.json()["install_queued"] == 1, assigned.text

    # lock with a PIN (raw command and the action), firmware and recovery-lock passwords, bypass code, FileVault
    def enqueue(request_type, parameters=None):
        response = api.post(f"/api/v1/devices/{device_id}/commands",
                            json={"request_type": request_type, "parameters": parameters})
        assert response.status_code == 201, response.text
        return response.json()["data"]["id"]

    uuids = {
        "lock": enqueue("DeviceLock", {"PIN": lock_pin, "Message": "Return me"}),
        "firmware": enqueue("SetFirmwarePassword", {"NewPassword": firmware}),
        "recovery": enqueue("SetRecoveryLock", {"NewPassword": recovery}),
        "bypass": enqueue("ActivationLockBypassCode"),
        "security": enqueue("SecurityInfo"),
    }
    action = api.post(f"/api/v1/devices/{device_id}/actions/lock", json={"parameters": {"pin": action_pin}})
    assert action.status_code == 202, action.text

    handled = mac.run_session()
    assert {t for _, t, s in handled if s == "Acknowledged"} >= {
        "InstallProfile", "DeviceLock", "SetFirmwarePassword", "SetRecoveryLock", "ActivationLockBypassCode",
        "SecurityInfo"}

    # the device received the real values on the wire
    installed = mac.profiles["com.example.secrets"]
    assert installed["PayloadContent"][0]["Password"] == m["wifi"]
    assert installed["PayloadContent"][10]["PayloadContent"] == m["p12"].encode()
    received = {}
    for request_type, params in mac.received:
        received.setdefault(request_type, []).append(params)
    assert {p.get("PIN") for p in received["DeviceLock"]} == {lock_pin, action_pin}
    assert received["SetFirmwarePassword"][0]["NewPassword"] == firmware
    assert received["SetRecoveryLock"][0]["NewPassword"] == recovery

    # 1. at rest: no marker in any column of any table, in plaintext or base64
    findings, tables = _scan_database(live.app, {**_needles(markers), action_pin.encode(): "the action's PIN"})
    assert tables > 20
    assert not findings, findings

    # 2. a read token: no marker anywhere in any GET the API has (lists, details, history, inventory...)
    ids = {
        "ident": [device_id, mac.udid], "device_id": [device_id], "profile_id": [profile_id],
        "payload_id": [p["id"] for p in api.get(f"/api/v1/payloads?filter[profile]={profile_id}&page[size]=100")
                       .json()["data"]],
        "command_uuid": [c["id"] for c in api.get("/api/v1/commands?page[size]=100").json()["data"]],
    }
    assert set(uuids.values()) <= set(ids["command_uuid"])
    walked = 0
    needles = _needles(markers)
    for rule in live.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or "GET" not in rule.methods:
            continue
        for path in _fill(rule, ids):
            response = reader.get(path, params={"include": "payloads"} if rule.rule.endswith("profiles/<int:profile_id>")
                                  else None)
            walked += 1
            body = response.content
            unwrapped = re.sub(rb"\s+", b"", body)
            leaked = [what for needle, what in needles.items() if needle in body or needle in unwrapped]
            assert not leaked, (path, response.status_code, leaked)
            assert action_pin.encode() not in body, path
    assert walked > 30
    assert reader.get(f"/api/v1/download/profiles/{profile_id}").status_code == 403
    lock = reader.get(f"/api/v1/commands/{uuids['lock']}").json()["data"]["attributes"]
    assert lock["parameters"]["PIN"] == "[redacted]" and lock["parameters"]["Message"] == "Return me"
    bypass_read = reader.get(f"/api/v1/commands/{uuids['bypass']}").json()["data"]["attributes"]
    assert bypass_read["result"]["ActivationLockBypassCode"] == "[redacted]"

    # 3. a secrets token: the bypass code, the FileVault key, the PIN and the profile download
    shown = keeper.get(f"/api/v1/commands/{uuids['bypass']}").json()["data"]["attributes"]
    assert shown["result"]["ActivationLockBypassCode"] == bypass
    security = keeper.get(f"/api/v1/commands/{uuids['security']}").json()["data"]["attributes"]
    key_b64 = security["result"]["SecurityInfo"]["FDE_PersonalRecoveryKeyCMS"]
    assert base64.b64decode(key_b64) == filevault.encode()
    assert keeper.get(f"/api/v1/commands/{uuids['lock']}").json()["data"]["attributes"]["parameters"]["PIN"] == lock_pin
    downloaded = keeper.get(f"/api/v1/download/profiles/{profile_id}")
    assert downloaded.status_code == 200
    assert plistlib.loads(downloaded.content) == profile
    assert re.search(rb"SECRET", downloaded.content)
