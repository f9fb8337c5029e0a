#!/usr/bin/env python3
"""Generate the profile payload catalogue and the typed payload models from Apple's schema digest.

Reads ``conformance/apple-schema/summary.json`` (a digest of github.com/apple/device-management, MIT)
and writes two checked-in files that runtime code uses, so the server never reads ``/work/shared``:

- ``mdmserver/profiles/catalogue.json``: every payload type with its keys (path, type, required,
  enum, range, format, item type), entries of one payload type merged. Used for the Apple-schema
  warnings on upload.
- ``mdmserver/profiles/payload_models.py``: one joined-table SQLAlchemy model per typed payload, one
  column per top-level key Apple documents for it, typed after the catalogue.

Usage: ``python tools/gen_payload_catalogue.py [path/to/summary.json]``. After changing the typed
payload list, write a migration for the new columns (``alembic revision --autogenerate``).
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mdmserver.protocol.secrets import is_secret  # noqa: E402

DEFAULT_SOURCE = Path("/work/shared/conformance/apple-schema/summary.json")
CATALOGUE_OUT = ROOT / "mdmserver" / "profiles" / "catalogue.json"
MODELS_OUT = ROOT / "mdmserver" / "profiles" / "payload_models.py"

#: Key facts kept in the catalogue (descriptions and titles are left out to keep it small).
KEPT_FACTS = ("type", "required", "enum", "range", "format", "item_type", "item_enum", "recursive")

#: (polymorphic identity, class name, table name, payload types) of every typed payload model.
TYPED_PAYLOADS: list[tuple[str, str, str, list[str]]] = [
    ("passcode", "PasscodePayload", "payloads_passcode", ["com.apple.mobiledevice.passwordpolicy"]),
    ("wifi", "WiFiPayload", "payloads_wifi", ["com.apple.wifi.managed"]),
    ("vpn", "VPNPayload", "payloads_vpn", ["com.apple.vpn.managed"]),
    ("restrictions", "RestrictionsPayload", "payloads_restrictions", ["com.apple.applicationaccess"]),
    (
        "certificate",
        "CertificatePayload",
        "payloads_certificate",
        ["com.apple.security.root", "com.apple.security.pkcs1", "com.apple.security.pkcs12"],
    ),
    ("scep", "SCEPPayload", "payloads_scep", ["com.apple.security.scep"]),
    ("mail", "MailPayload", "payloads_mail", ["com.apple.mail.managed"]),
    ("exchange", "ExchangePayload", "payloads_exchange", ["com.apple.eas.account"]),
    ("webclip", "WebClipPayload", "payloads_webclip", ["com.apple.webClip.managed"]),
    ("dns", "DNSSettingsPayload", "payloads_dns", ["com.apple.dnsSettings.managed"]),
    (
        "managed_preferences",
        "ManagedPreferencesPayload",
        "payloads_managed_preferences",
        ["com.apple.ManagedClient.preferences"],
    ),
    (
        "privacy_preferences",
        "PrivacyPreferencesPayload",
        "payloads_privacy_preferences",
        ["com.apple.TCC.configuration-profile-policy"],
    ),
    (
        "system_extensions",
        "SystemExtensionsPayload",
        "payloads_system_extensions",
        ["com.apple.system-extension-policy"],
    ),
    (
        "kernel_extensions",
        "KernelExtensionsPayload",
        "payloads_kernel_extensions",
        ["com.apple.syspolicy.kernel-extension-policy"],
    ),
    ("notifications", "NotificationsPayload", "payloads_notifications", ["com.apple.notificationsettings"]),
    ("filevault", "FileVaultPayload", "payloads_filevault", ["com.apple.MCX.FileVault2"]),
    ("firewall", "FirewallPayload", "payloads_firewall", ["com.apple.security.firewall"]),
    ("login_window", "LoginWindowPayload", "payloads_login_window", ["com.apple.loginwindow"]),
    ("single_app_mode", "SingleAppModePayload", "payloads_single_app_mode", ["com.apple.app.lock"]),
    ("mdm", "MDMPayload", "payloads_mdm", ["com.apple.mdm"]),
]

#: Column names the base ``payloads`` table already uses (a payload key mapping to one gets ``_value``).
RESERVED = {
    "id", "kind", "profile_id", "position", "payload_type", "identifier", "uuid", "version",
    "display_name", "description", "organization", "enabled", "extras", "key_order", "profile",
    "metadata", "registry", "plist_fields", "payload_class",
}

#: Keys whose values are secrets get no column (sealed in ``extras``) and are write-only in JSON:API:
#: the secrets policy (``mdmserver.protocol.secrets``, from the same schema) decides which.

#: Keys every payload has; the base ``payloads`` table holds them.
COMMON_KEYS = {
    "PayloadType", "PayloadIdentifier", "PayloadUUID", "PayloadVersion", "PayloadDisplayName",
    "PayloadDescription", "PayloadOrganization",
}

COLUMN_TYPES = {
    "string": ("str", "Text"),
    "integer": ("int", "BigInteger"),
    "boolean": ("bool", "Boolean"),
    "real": ("float", "Float"),
    "date": ("datetime", "UTCDateTime"),
    "data": ("bytes", "LargeBinary"),
}


def merge_payloads(summary: dict) -> dict[str, dict]:
    """Merge the entries of each payload type: keys are united; a key (or a top-level required key)
    stays required only if every entry of that type requires it."""
    merged: dict[str, dict] = {}
    counts: dict[str, int] = {}
    for entry in summary["payloads"]:
        ptype = entry["payload_type"]
        counts[ptype] = counts.get(ptype, 0) + 1
        target = merged.setdefault(
            ptype,
            {
                "platforms": [],
                "pseudo": bool(entry.get("pseudo")),
                "required_keys": list(entry.get("required_keys") or []),
                "keys": {},
                "_seen": {},
            },
        )
        for platform in entry.get("platforms") or []:
            if platform not in target["platforms"]:
                target["platforms"].append(platform)
        if counts[ptype] > 1:
            target["required_keys"] = [
                k for k in target["required_keys"] if k in (entry.get("required_keys") or [])
            ]
        for key in entry.get("keys") or []:
            facts = {name: key[name] for name in KEPT_FACTS if name in key}
            facts["key"] = key["key"]
            path = key["path"]
            target["_seen"][path] = target["_seen"].get(path, 0) + 1
            existing = target["keys"].get(path)
            if existing is None:
                target["keys"][path] = facts
                continue
            existing["required"] = existing["required"] and facts["required"]
            if existing["type"] != facts["type"]:
                existing["type"] = "any"
            for name in ("enum", "item_enum"):
                if name in existing and name in facts:
                    existing[name] = existing[name] + [v for v in facts[name] if v not in existing[name]]
                elif name in existing:
                    del existing[name]
    for ptype, target in merged.items():
        if counts[ptype] > 1:
            for path, facts in target["keys"].items():
                if target["_seen"][path] < counts[ptype]:
                    facts["required"] = False
        del target["_seen"]
        target["keys"] = [{"path": path, **facts} for path, facts in target["keys"].items()]
        target["entries"] = counts[ptype]
    return dict(sorted(merged.items()))


def snake(name: str) -> str:
    """Apple key → Python attribute / column name (``SSID_STR`` → ``ssid_str``)."""
    text = re.sub(r"[^0-9A-Za-z]+", "_", name)
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = text.strip("_").lower()
    if not text or text[0].isdigit() or keyword.iskeyword(text):
        text = f"k_{text}"
    if text in RESERVED:
        text = f"{text}_value"
    return text


def top_level_keys(catalogue: dict, payload_types: list[str]) -> list[dict]:
    seen: dict[str, dict] = {}
    for ptype in payload_types:
        for key in catalogue[ptype]["keys"]:
            path = key["path"]
            if path != key["key"] or path in COMMON_KEYS:
                continue
            if path in seen:
                if seen[path]["type"] != key["type"]:
                    seen[path] = {**seen[path], "type": "any"}
                continue
            seen[path] = key
    return list(seen.values())


def render_models(catalogue: dict) -> str:
    lines = [
        '"""Typed payload models, one joined table per payload type.',
        "",
        "GENERATED by tools/gen_payload_catalogue.py from Apple's device-management schema: do not edit.",
        "Each class maps the top-level keys Apple documents for its payload type to typed columns; anything",
        "else (unknown keys, values of another type) lives in ``Payload.extras``.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from datetime import datetime  # noqa: F401 - used by date-typed columns when there are any",
        "from typing import Any",
        "",
        "from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, LargeBinary, Text",
        "from sqlalchemy.orm import Mapped, mapped_column",
        "",
        "from mdmserver.db import UTCDateTime  # noqa: F401",
        "from mdmserver.profiles.models import Payload, PlistField",
        "",
        "__all__ = [",
        *[f'    "{spec[1]}",' for spec in TYPED_PAYLOADS],
        '    "PAYLOAD_CLASSES",',
        "]",
    ]
    registry = []
    for identity, class_name, table, payload_types in TYPED_PAYLOADS:
        keys = top_level_keys(catalogue, payload_types)
        lines += ["", "", f"class {class_name}(Payload):"]
        lines.append(f'    """{", ".join(payload_types)}."""')
        lines.append("")
        lines.append(f'    __tablename__ = "{table}"')
        lines.append(f'    __mapper_args__ = {{"polymorphic_identity": "{identity}", "polymorphic_load": "selectin"}}')
        lines.append("    payload_types = (" + "".join(f'"{t}", ' for t in payload_types).rstrip(" ") + ")")
        lines.append("")
        lines.append(
            '    id: Mapped[int] = mapped_column(ForeignKey("payloads.id", ondelete="CASCADE"), primary_key=True)'
        )
        fields = []
        used: set[str] = set()
        for key in keys:
            attr = snake(key["key"])
            while attr in used:
                attr += "_"
            used.add(attr)
            kind = key["type"]
            secret = key["type"] != "boolean" and all(is_secret(key["key"], payload_type=t) for t in payload_types)
            if kind in COLUMN_TYPES:
                pytype, coltype = COLUMN_TYPES[kind]
                if coltype == "UTCDateTime":
                    coltype = "UTCDateTime()"
            else:
                kind = {"array": "array", "dictionary": "dictionary"}.get(kind, "any")
                pytype, coltype = "Any", "JSON"
            if not secret:
                lines.append(f"    {attr}: Mapped[{pytype} | None] = mapped_column({coltype})")
            extra = ", secret=True" if secret else ""
            fields.append(f'        PlistField("{key["key"]}", "{attr}", "{kind}"{extra}),')
        lines.append("")
        lines.append("    plist_fields = Payload.plist_fields + (")
        lines += fields
        lines.append("    )")
        registry += [f'    "{ptype}": {class_name},' for ptype in payload_types]
    lines += ["", "", "#: PayloadType → typed model; every other type is stored by the generic ``Payload``."]
    lines.append("PAYLOAD_CLASSES: dict[str, type[Payload]] = {")
    lines += registry
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else DEFAULT_SOURCE
    summary = json.loads(source.read_text(encoding="utf-8"))
    catalogue = merge_payloads(summary)
    document = {
        "source": summary.get("source"),
        "source_commit": summary.get("source_commit"),
        "licence": "MIT, Copyright (c) 2022-2024 Apple Inc. (apple/device-management)",
        "payloads": catalogue,
    }
    CATALOGUE_OUT.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    MODELS_OUT.write_text(render_models(catalogue), encoding="utf-8")
    print(f"wrote {CATALOGUE_OUT.relative_to(ROOT)} ({len(catalogue)} payload types)")
    print(f"wrote {MODELS_OUT.relative_to(ROOT)} ({len(TYPED_PAYLOADS)} typed models)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
