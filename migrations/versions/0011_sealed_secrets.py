"""secrets sealed at rest everywhere: the schema-derived secrets policy for profiles, commands, results

Revision ID: 0011_sealed_secrets
Revises: 0007_profile_assignments, 0010_enrollment_limits

- Typed payload columns that hold secrets (Wi-Fi ``ProxyPassword``, Exchange ``Certificate`` and
  ``CertificatePassword``, login window ``AutologinPassword``) are dropped; their values move into
  ``payloads.extras``, sealed.
- Every ``extras`` and JSON column of profiles and payloads is walked: values of keys the secrets
  policy names secret (``CalDAVPassword``, ``Proxies.HTTPProxyPassword``...) are sealed.
- Command parameters holding secrets (InstallProfile, PINs, firmware and recovery-lock passwords)
  are sealed and re-addressed by a keyed digest; command results holding secrets (bypass codes,
  FileVault keys) are sealed.

The secret key comes from the application (``mdmserver db upgrade`` and ``mdmserver init`` run
migrations inside the app); it is only looked up when there is something to seal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import plistlib
from typing import Any

import sqlalchemy as sa
from alembic import op

from mdmserver.collaborators import secret_box
from mdmserver.protocol import secrets as policy

revision = "0011_sealed_secrets"
# 0008 (command_parameters) and the profile tables (through 0007) must both exist first
down_revision = ("0007_profile_assignments", "0010_enrollment_limits")
branch_labels = None
depends_on = None

_PROFILE_CONTEXT = b"mdmserver.profiles.secret"
_PARAMETERS_CONTEXT = b"mdmserver.commands.parameters"
_RESULT_CONTEXT = b"mdmserver.commands.result"
_SEALED_PREFIX = b"mdmserver:sealed:1:"
_TAGS = {"$data", "$date", "$real", "$dict", "$sealed"}

#: (table, column, Apple key, JSON form of the column's value) of the dropped secret columns.
_MOVED = [
    ("payloads_wifi", "proxy_password", "ProxyPassword", sa.Text()),
    ("payloads_exchange", "certificate", "Certificate", sa.LargeBinary()),
    ("payloads_exchange", "certificate_password", "CertificatePassword", sa.Text()),
    ("payloads_login_window", "autologin_password", "AutologinPassword", sa.Text()),
]


class _Box:
    """The application's secret box, looked up on first use."""

    def __init__(self) -> None:
        self._box = None

    def get(self):
        if self._box is None:
            self._box = secret_box()
        return self._box

    def seal_json(self, value: Any) -> dict[str, str]:
        blob = self.get().encrypt(json.dumps(value).encode(), associated_data=_PROFILE_CONTEXT)
        return {"$sealed": base64.b64encode(blob).decode("ascii")}

    def unseal_json(self, token: str) -> Any:
        return json.loads(self.get().decrypt(base64.b64decode(token), associated_data=_PROFILE_CONTEXT))


def _seal_tree(value: Any, box: _Box, payload_type: str | None = None, top: bool = False) -> tuple[Any, bool]:
    """The JSON form with every secret key's value sealed; (new value, whether anything changed)."""
    if isinstance(value, list):
        changed = False
        out = []
        for item in value:
            new, c = _seal_tree(item, box)
            out.append(new)
            changed |= c
        return out, changed
    if not isinstance(value, dict):
        return value, False
    if len(value) == 1 and next(iter(value)) in _TAGS:
        tag, inner = next(iter(value.items()))
        if tag == "$dict":
            new, changed = _seal_tree(inner, box)
            return {"$dict": new}, changed
        return value, False
    changed = False
    out = {}
    for key, item in value.items():
        already = isinstance(item, dict) and list(item) == ["$sealed"]
        if not already and policy.is_secret(key, item, payload_type=payload_type if top else None):
            out[key] = box.seal_json(item)
            changed = True
        else:
            out[key], c = _seal_tree(item, box)
            changed |= c
    return out, changed


def _json_columns(inspector, table: str) -> list[str]:
    return [c["name"] for c in inspector.get_columns(table) if isinstance(c["type"], sa.JSON)]


def _seal_profile_data(bind, box: _Box) -> None:
    inspector = sa.inspect(bind)
    tables = [t for t in inspector.get_table_names() if t in ("profiles", "payloads") or t.startswith("payloads_")]
    for table in tables:
        columns = _json_columns(inspector, table)
        if not columns:
            continue
        with_type = table in ("profiles", "payloads")
        names = ["id", *columns, *(["payload_type"] if with_type else [])]
        rows = bind.execute(sa.text(f"SELECT {', '.join(names)} FROM {table}")).mappings().all()
        for row in rows:
            changes = {}
            for column in columns:
                raw = row[column]
                value = json.loads(raw) if isinstance(raw, str) else raw
                if value is None or column == "key_order":
                    continue
                top = with_type and column == "extras"
                new, changed = _seal_tree(value, box, row["payload_type"] if with_type else None, top=top)
                if changed:
                    changes[column] = new
            if changes:
                sets = ", ".join(f"{c} = :{c}" for c in changes)
                stmt = sa.text(f"UPDATE {table} SET {sets} WHERE id = :id").bindparams(
                    *[sa.bindparam(c, type_=sa.JSON()) for c in changes])
                bind.execute(stmt, {**changes, "id": row["id"]})


_UPDATE_EXTRAS = sa.text("UPDATE payloads SET extras = :extras WHERE id = :id").bindparams(
    sa.bindparam("extras", type_=sa.JSON()))


def _move_columns_to_extras(bind, box: _Box) -> None:
    for table, column, key, _ in _MOVED:
        rows = bind.execute(sa.text(
            f"SELECT t.id, t.{column} AS value, p.extras FROM {table} t JOIN payloads p ON p.id = t.id "
            f"WHERE t.{column} IS NOT NULL"
        )).mappings().all()
        for row in rows:
            value = row["value"]
            if isinstance(value, bytes | bytearray | memoryview):
                value = {"$data": base64.b64encode(bytes(value)).decode("ascii")}
            extras = json.loads(row["extras"]) if isinstance(row["extras"], str) else dict(row["extras"] or {})
            extras[key] = box.seal_json(value)
            bind.execute(_UPDATE_EXTRAS, {"extras": extras, "id": row["id"]})
    for table, column, _, _ in _MOVED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column)


def _parse(blob: bytes) -> Any:
    try:
        return plistlib.loads(bytes(blob))
    except Exception:  # noqa: BLE001 - stored bodies we cannot read are left as they are
        return None


def _seal_commands(bind, box: _Box) -> None:
    request_types = dict(bind.execute(sa.text(
        "SELECT parameters_id, MIN(request_type) FROM commands GROUP BY parameters_id"
    )).all())
    for row_id, body in bind.execute(sa.text("SELECT id, body FROM command_parameters")).all():
        body = bytes(body)
        if body.startswith(_SEALED_PREFIX):
            continue
        params = _parse(body)
        if params is None or not policy.contains_secret(params, request_type=request_types.get(row_id)):
            continue
        sealed = _SEALED_PREFIX + box.get().encrypt(body, associated_data=_PARAMETERS_CONTEXT)
        bind.execute(sa.text("UPDATE command_parameters SET body = :body, sha256 = :digest WHERE id = :id"),
                     {"body": sealed, "digest": box.get().digest(body, context=_PARAMETERS_CONTEXT), "id": row_id})
    last = 0
    while True:
        rows = bind.execute(sa.text(
            "SELECT id, result FROM commands WHERE result IS NOT NULL AND id > :last ORDER BY id LIMIT 1000"
        ), {"last": last}).all()
        if not rows:
            return
        for row_id, result in rows:
            last = row_id
            result = bytes(result)
            if result.startswith(_SEALED_PREFIX):
                continue
            value = _parse(result)
            if value is None or not policy.contains_secret(value):
                continue
            sealed = _SEALED_PREFIX + box.get().encrypt(result, associated_data=_RESULT_CONTEXT)
            bind.execute(sa.text("UPDATE commands SET result = :result WHERE id = :id"),
                         {"result": sealed, "id": row_id})


def upgrade() -> None:
    bind = op.get_bind()
    box = _Box()
    _move_columns_to_extras(bind, box)
    _seal_profile_data(bind, box)
    _seal_commands(bind, box)


def downgrade() -> None:
    """Columns come back with their values; command blobs are unsealed (plain SHA-256 addresses).
    Values sealed inside JSON stay sealed: the earlier code reads ``$sealed`` at any key."""
    bind = op.get_bind()
    box = _Box()
    for table, column, _, coltype in _MOVED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column(column, coltype, nullable=True))
    for table, column, key, _ in _MOVED:
        rows = bind.execute(sa.text(
            f"SELECT t.id, p.extras FROM {table} t JOIN payloads p ON p.id = t.id"
        )).mappings().all()
        for row in rows:
            extras = json.loads(row["extras"]) if isinstance(row["extras"], str) else dict(row["extras"] or {})
            sealed = extras.get(key)
            if not (isinstance(sealed, dict) and list(sealed) == ["$sealed"]):
                continue
            value = box.unseal_json(sealed["$sealed"])
            if isinstance(value, dict) and "$data" in value:
                value = base64.b64decode(value["$data"])
            elif not isinstance(value, str):
                continue
            del extras[key]
            bind.execute(sa.text(f"UPDATE {table} SET {column} = :value WHERE id = :id"),
                         {"value": value, "id": row["id"]})
            bind.execute(_UPDATE_EXTRAS, {"extras": extras, "id": row["id"]})
    for row_id, body in bind.execute(sa.text("SELECT id, body FROM command_parameters")).all():
        body = bytes(body)
        if body.startswith(_SEALED_PREFIX):
            plain = box.get().decrypt(body[len(_SEALED_PREFIX):], associated_data=_PARAMETERS_CONTEXT)
            bind.execute(sa.text("UPDATE command_parameters SET body = :body, sha256 = :digest WHERE id = :id"),
                         {"body": plain, "digest": hashlib.sha256(plain).hexdigest(), "id": row_id})
    for row_id, result in bind.execute(sa.text("SELECT id, result FROM commands WHERE result IS NOT NULL")).all():
        result = bytes(result)
        if result.startswith(_SEALED_PREFIX):
            plain = box.get().decrypt(result[len(_SEALED_PREFIX):], associated_data=_RESULT_CONTEXT)
            bind.execute(sa.text("UPDATE commands SET result = :result WHERE id = :id"), {"result": plain, "id": row_id})
