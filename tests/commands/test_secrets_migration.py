"""Migration 0011 seals what earlier revisions stored in plaintext: secret payload columns, secret keys
inside JSON, command parameters and results (issue 9, item 3). Downgrade brings the columns back."""

from __future__ import annotations

import json
import plistlib
import uuid

import sqlalchemy as sa
from alembic import command as alembic_command

from mdmserver.bootstrap import upgrade_database
from mdmserver.collaborators import secret_box
from mdmserver.commands import service as commands
from mdmserver.db import db
from mdmserver.ops.readiness import alembic_config
from mdmserver.profiles.models import BoxSealer, Profile
from mdmserver.profiles.service import upload_profile
from mdmserver.records.commands import Command
from tests.conftest import make_app
from tests.factories import make_device


def _dump_everything(connection) -> bytes:
    """Every value of every table the database has, as bytes."""
    inspector = sa.inspect(connection)
    out = []
    for table in inspector.get_table_names():
        for row in connection.execute(sa.text(f'SELECT * FROM "{table}"')):
            for value in row:
                if isinstance(value, bytes | bytearray | memoryview):
                    out.append(bytes(value))
                elif isinstance(value, dict | list):
                    out.append(json.dumps(value).encode())
                elif value is not None:
                    out.append(str(value).encode())
    return b"\n".join(out)


def test_upgrade_seals_plaintext_secrets_of_earlier_revisions(tmp_path):
    marker = {k: f"OLDSECRET{k}{uuid.uuid4().hex[:8]}" for k in
              ("wifiproxy", "autologin", "caldav", "vpnproxy", "pin", "bypass")}
    app, cleanup = make_app(tmp_path)
    try:
        profile = {
            "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.old",
            "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": "Old",
            "PayloadContent": [
                {"PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1, "PayloadIdentifier": "w",
                 "PayloadUUID": str(uuid.uuid4()).upper(), "SSID_STR": "Office", "ProxyPassword": marker["wifiproxy"]},
                {"PayloadType": "com.apple.loginwindow", "PayloadVersion": 1, "PayloadIdentifier": "l",
                 "PayloadUUID": str(uuid.uuid4()).upper(), "AutologinPassword": marker["autologin"]},
                {"PayloadType": "com.apple.caldav.account", "PayloadVersion": 1, "PayloadIdentifier": "c",
                 "PayloadUUID": str(uuid.uuid4()).upper(), "CalDAVHostName": "cal.example.com"},
                {"PayloadType": "com.apple.vpn.managed", "PayloadVersion": 1, "PayloadIdentifier": "v",
                 "PayloadUUID": str(uuid.uuid4()).upper(), "VPNType": "IPSec", "Proxies": {"HTTPEnable": 1}},
            ],
        }
        with app.app_context():
            session = db.session
            stored, _ = upload_profile(session, plistlib.dumps(profile), box=secret_box())
            device = make_device(session, index=1)
            queued = commands.enqueue_commands(session, [device.id], "ActivationLockBypassCode", None, enqueued_by="t", box=secret_box())
            session.commit()
            profile_id, command_uuid = stored.id, queued[0]["uuid"]
            session.remove()

        # back to the revision before: the secret columns return with their values
        with app.app_context(), db.engine.begin() as connection:
            config = alembic_config(app.config["DATABASE_URL"])
            config.attributes["connection"] = connection
            alembic_command.downgrade(config, "0008_command_parameters")
        with app.app_context(), db.engine.begin() as connection:
            assert connection.execute(sa.text("SELECT proxy_password FROM payloads_wifi")).scalar() == marker["wifiproxy"]
            assert connection.execute(
                sa.text("SELECT autologin_password FROM payloads_login_window")).scalar() == marker["autologin"]
            # what earlier revisions wrote in plaintext: a nested proxy password, an unknown-to-them
            # secret key in extras, a lock PIN, a bypass code in a result
            caldav_id = connection.execute(sa.text(
                "SELECT id FROM payloads WHERE payload_type = 'com.apple.caldav.account'")).scalar()
            extras = connection.execute(sa.text("SELECT extras FROM payloads WHERE id = :i"), {"i": caldav_id}).scalar()
            extras = json.loads(extras) if isinstance(extras, str) else extras
            extras["CalDAVPassword"] = marker["caldav"]
            order = connection.execute(sa.text("SELECT key_order FROM payloads WHERE id = :i"), {"i": caldav_id}).scalar()
            order = [*(json.loads(order) if isinstance(order, str) else order), "CalDAVPassword"]
            connection.execute(sa.text("UPDATE payloads SET extras = :e, key_order = :o WHERE id = :i").bindparams(
                sa.bindparam("e", type_=sa.JSON()), sa.bindparam("o", type_=sa.JSON())),
                {"e": extras, "o": order, "i": caldav_id})
            connection.execute(sa.text("UPDATE payloads_vpn SET proxies = :p").bindparams(
                sa.bindparam("p", type_=sa.JSON())), {"p": {"HTTPEnable": 1, "HTTPProxyPassword": marker["vpnproxy"]}})
            lock = plistlib.dumps({"PIN": marker["pin"], "Message": "m"})
            connection.execute(sa.text("INSERT INTO command_parameters (sha256, body) VALUES ('plain-lock', :b)"),
                               {"b": lock})
            connection.execute(sa.text(
                "UPDATE commands SET status = 'acknowledged', result = :r WHERE uuid = :u"),
                {"r": plistlib.dumps({"Status": "Acknowledged", "CommandUUID": command_uuid,
                                      "ActivationLockBypassCode": marker["bypass"]}), "u": command_uuid})
            before = _dump_everything(connection)
        assert all(m.encode() in before for m in marker.values())

        upgrade_database(app)
        with app.app_context():
            with db.engine.connect() as connection:
                after = _dump_everything(connection)
            leaked = [k for k, m in marker.items() if m.encode() in after]
            assert not leaked, leaked
            # and everything reads back
            values = db.session.get(Profile, profile_id).to_plist(BoxSealer(secret_box()))
            content = values["PayloadContent"]
            assert content[0]["ProxyPassword"] == marker["wifiproxy"]
            assert content[1]["AutologinPassword"] == marker["autologin"]
            assert content[2]["CalDAVPassword"] == marker["caldav"]
            assert content[3]["Proxies"]["HTTPProxyPassword"] == marker["vpnproxy"]
            command = db.session.scalar(sa.select(Command).where(Command.uuid == command_uuid))
            assert commands.result_value(command, secret_box())["ActivationLockBypassCode"] == marker["bypass"]
            sealed_lock = db.session.execute(sa.text(
                "SELECT body FROM command_parameters WHERE body NOT LIKE '<?xml%'")).scalars().all()
            assert any(commands.command_parameters(bytes(b), secret_box()) == {"PIN": marker["pin"], "Message": "m"}
                       for b in sealed_lock)
    finally:
        cleanup()
