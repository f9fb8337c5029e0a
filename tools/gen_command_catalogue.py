#!/usr/bin/env python3
"""Generate ``mdmserver/protocol/command_catalogue.json`` from Apple's schema digest.

Usage: ``python tools/gen_command_catalogue.py [SUMMARY_JSON]`` (default:
``/work/shared/conformance/apple-schema/summary.json`` or ``$MDMSERVER_APPLE_SCHEMA``).

The output is checked in; the server reads only the generated file. Each request type gets its
platforms (our names), the platforms where it needs supervision, its access rights and a tree of
its request keys (types, required flags, enums, array items, variants) from which
``mdmserver.protocol.catalogue`` builds a marshmallow schema.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "mdmserver" / "protocol" / "command_catalogue.json"
DEFAULT_SOURCE = "/work/shared/conformance/apple-schema/summary.json"

PLATFORMS = {
    "iOS": ["ios", "ipados"],
    "macOS": ["macos"],
    "tvOS": ["tvos"],
    "watchOS": ["watchos"],
    "visionOS": ["visionos"],
}

# Parameters used when an administrator enqueues the command without any.
DEFAULT_PARAMETERS = {
    "DeviceInformation": {
        "Queries": [
            "UDID", "DeviceName", "OSVersion", "BuildVersion", "ModelName", "Model", "ProductName",
            "SerialNumber", "DeviceCapacity", "AvailableDeviceCapacity", "BatteryLevel", "IMEI",
            "MEID", "ModemFirmwareVersion", "CellularTechnology", "IsSupervised",
            "IsDeviceLocatorServiceEnabled", "IsActivationLockEnabled", "IsDoNotDisturbInEffect",
            "IsCloudBackupEnabled", "LastCloudBackupDate", "AwaitingConfiguration", "WiFiMAC",
            "BluetoothMAC", "IsMDMLostModeEnabled", "OSUpdateSettings",
            "LocalHostName", "HostName", "SystemIntegrityProtectionEnabled", "EASDeviceIdentifier",
            "IsMultiUser", "IsNetworkTethered", "PersonalHotspotEnabled", "DataRoamingEnabled",
            "VoiceRoamingEnabled", "ICCID", "CurrentCarrierNetwork", "SubscriberCarrierNetwork",
            "PhoneNumber",
        ]
    },
}

SEGMENT = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?:<(?P<variant>[^>]+)>)?\])?$")


def _platforms(apple: list[str]) -> list[str]:
    out: list[str] = []
    for name in apple:
        for ours in PLATFORMS.get(name, []):
            if ours not in out:
                out.append(ours)
    return out


def _node(key: dict) -> dict:
    node: dict = {"type": key["type"], "required": bool(key.get("required"))}
    for src, dst in (("enum", "enum"), ("item_type", "item_type"), ("item_enum", "item_enum"),
                     ("default", "default")):
        if src in key:
            node[dst] = key[src]
    if "platforms" in key:
        node["platforms"] = _platforms(key["platforms"])
    if key.get("supervised_on"):
        node["supervised_on"] = _platforms(key["supervised_on"])
    if key.get("deprecated"):
        node["deprecated"] = True
    if node["type"] == "array":
        node["item"] = {"type": key.get("item_type", "any"), "required": True}
        if "item_enum" in key:
            node["item"]["enum"] = key["item_enum"]
    return node


def _split(path: str) -> list[str]:
    # split on dots that are not inside <…>
    parts, depth, buf = [], 0, ""
    for ch in path:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        if ch == "." and depth == 0:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    parts.append(buf)
    return parts


def build_tree(request_keys: list[dict]) -> dict:
    root: dict = {"type": "dictionary", "required": True, "keys": {}}
    for key in request_keys:
        segments = _split(key["path"])
        node = root
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            if segment == "ANY":
                node["any_keys"] = True
                break
            match = SEGMENT.match(segment)
            if not match:
                raise SystemExit(f"unexpected path segment {segment!r} in {key['path']!r}")
            name, variant = match["name"], match["variant"]
            is_array_part = segment.endswith("]")
            keys = node.setdefault("keys", {})
            if last and not is_array_part:
                keys[name] = {**_node(key), **{k: v for k, v in keys.get(name, {}).items()
                                               if k in ("keys", "item", "variants", "any_keys")}}
                break
            child = keys.setdefault(name, {"type": "array" if is_array_part else "dictionary",
                                           "required": False})
            if not is_array_part:
                node = child
                continue
            if variant is not None:
                variants = child.setdefault("variants", {})
                if last:
                    variants[variant] = {**_node(key), "keys": variants.get(variant, {}).get("keys", {})}
                    break
                node = variants.setdefault(variant, {"type": "dictionary", "required": True, "keys": {}})
            else:
                item = child.setdefault("item", {"type": "dictionary", "required": True})
                item["type"] = "dictionary"
                node = item
    return root


def _variant_discriminator(tree: dict) -> None:
    """Arrays of variants are told apart by the key whose single enum value names the variant."""
    for node in tree.get("keys", {}).values():
        if "variants" in node:
            for name, variant in node["variants"].items():
                for key_name, key in variant.get("keys", {}).items():
                    if key.get("enum") == [name] or (len(key.get("enum", [])) == 1 and key.get("required")):
                        node["discriminator"] = key_name
                        break
            node.pop("item", None)
        for sub in ("item",):
            if sub in node:
                _variant_discriminator(node[sub])
        if node.get("type") == "dictionary":
            _variant_discriminator(node)


def main(argv: list[str]) -> int:
    source = Path(argv[1] if len(argv) > 1 else os.environ.get("MDMSERVER_APPLE_SCHEMA", DEFAULT_SOURCE))
    summary = json.loads(source.read_text())
    commands = {}
    for command in sorted(summary["commands"], key=lambda c: c["request_type"]):
        tree = build_tree(command["request_keys"])
        _variant_discriminator(tree)
        description = (command.get("description") or "").split(". ")[0].strip()
        commands[command["request_type"]] = {
            "title": command.get("title"),
            "description": description.rstrip(".") + "." if description else None,
            "platforms": _platforms(command["platforms"]),
            "supervised_required_on": _platforms(command.get("supervised_required_on") or []),
            "access_rights": command.get("access_rights") or [],
            "user_channel": any(
                (os_flags or {}).get("userchannel") for os_flags in (command.get("os") or {}).values()
            ),
            "parameters": tree,
            "default_parameters": DEFAULT_PARAMETERS.get(command["request_type"]),
        }
    catalogue = {
        "generated_by": "tools/gen_command_catalogue.py",
        "source": summary.get("source"),
        "source_commit": summary.get("source_commit"),
        "release_os_versions": summary.get("release_os_versions"),
        "commands": commands,
    }
    OUTPUT.write_text(json.dumps(catalogue, indent=1, sort_keys=False) + "\n")
    print(f"wrote {len(commands)} request types to {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
