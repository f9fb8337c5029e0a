"""Print the ``mdmserver`` packages one request walks through, in the order it enters them.

Three requests a reviewer asks about: a device's ``Idle`` on ``/mdm/connect`` (one queued command),
a bulk action on a group (``POST /api/v1/actions/lock`` with ``{"groups": [id]}``), and a profile
upload. Each runs in-process (Flask test client, SQLite in a temporary folder, a simulated device
with real CMS signatures) under ``sys.setprofile``; every Python call whose code lives in
``mdmserver/<package>/`` (or a top-level module) is recorded; each package is printed once, where the
request first enters it, followed by the calls that cross from one feature package into another.

    .venv/bin/python tools/request_walk.py
"""

from __future__ import annotations

import io
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdmserver.app import create_app  # noqa: E402
from mdmserver.bootstrap import initialize  # noqa: E402
from mdmserver.db import db  # noqa: E402
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice  # noqa: E402
from mdmserver.tokens.service import create_token  # noqa: E402
from tests.factories import install_push_topic  # noqa: E402

PACKAGE_DIR = ROOT / "mdmserver"
PROFILE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>PayloadContent</key><array><dict>
<key>PayloadType</key><string>com.apple.mobiledevice.passwordpolicy</string>
<key>PayloadIdentifier</key><string>walk.passcode</string>
<key>PayloadUUID</key><string>6C1A3F7E-0D55-4E1B-9C6B-2B7D1F3A9E10</string>
<key>PayloadVersion</key><integer>1</integer>
<key>minLength</key><integer>6</integer>
</dict></array>
<key>PayloadDisplayName</key><string>Passcode</string>
<key>PayloadIdentifier</key><string>walk.profile</string>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadUUID</key><string>0E7C2B5A-4F1D-4A8E-B3C6-7D9E1F2A3B40</string>
<key>PayloadVersion</key><integer>1</integer>
</dict></plist>
"""


def package_of(filename: str) -> str | None:
    try:
        relative = Path(filename).resolve().relative_to(PACKAGE_DIR)
    except ValueError:
        return None
    parts = relative.parts
    return parts[0] if len(parts) > 1 else relative.stem


#: the base floor (request plumbing, database, pure protocol and crypto, audit, metrics): left out of the
#: cross-package calls, which are meant to show how features depend on each other
BASE = {"api", "app", "db", "errors", "protocol", "pki", "ops", "audit", "tokens", "config", "simulator", "collaborators"}


def walk(run: Callable[[], object]) -> tuple[list[str], list[str]]:
    order: dict[str, None] = {}
    crossings: dict[str, None] = {}
    cache: dict[str, str | None] = {}

    def package(code) -> str | None:
        name = code.co_filename
        if name not in cache:
            cache[name] = package_of(name)
        return cache[name]

    def profile(frame, event, _arg):
        if event != "call":
            return
        callee = package(frame.f_code)
        if callee is None:
            return
        order.setdefault(callee, None)
        caller_frame = frame.f_back
        while caller_frame is not None and package(caller_frame.f_code) is None:
            caller_frame = caller_frame.f_back
        caller = package(caller_frame.f_code) if caller_frame is not None else None
        if caller and caller != callee and not {caller, callee} & BASE:
            crossings.setdefault(f"{caller} → {callee}", None)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return list(order), list(crossings)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="request-walk-"))
    app = create_app(overrides={
        "data_dir": str(tmp / "data"), "database_url": f"sqlite:///{tmp / 'walk.db'}",
        "log_level": "WARNING", "admission_policy": "auto", "enroll_rate_limit": 0,
    }, environ={})
    initialize(app)
    client = app.test_client()
    with app.app_context():
        _, token = create_token(db.session, "walk", ["admin"])
        db.session.commit()
        install_push_topic(db.session)
    admin = {"Authorization": f"Bearer {token}"}
    device = SimulatedDevice(FlaskTransport(client), seed=7)
    device.enroll()
    assert device.authenticate() == 200 and device.token_update() == 200
    group = client.post("/api/v1/device_groups", headers=admin, json={
        "data": {"type": "device_groups", "attributes": {"name": "walk"}}}).get_json()["data"]["id"]
    linked = client.post(f"/api/v1/device_groups/{group}/relationships/devices", headers=admin,
                         json={"data": [{"type": "devices", "id": device.udid}]})
    assert linked.status_code < 300, linked.get_json()

    def bulk() -> None:
        response = client.post("/api/v1/actions/lock", headers=admin, json={"groups": [group]})
        assert response.status_code == 200, response.get_json()

    def idle() -> None:
        status, _command = device.idle()
        assert status == 200

    def upload() -> None:
        response = client.post("/api/v1/upload/profiles", headers=admin, content_type="multipart/form-data",
                               data={"file": (io.BytesIO(PROFILE), "walk.mobileconfig", "application/octet-stream")})
        assert response.status_code == 201, response.get_json()

    for title, run in (("bulk action on a group (POST /api/v1/actions/lock)", bulk),
                       ("device Idle with the queued lock (PUT /mdm/connect)", idle),
                       ("profile upload (POST /api/v1/upload/profiles)", upload)):
        order, crossings = walk(run)
        print(f"{title}:\n  entered: " + " → ".join(order) + "\n  feature calls: " + ", ".join(crossings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
