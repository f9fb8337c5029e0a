#!/usr/bin/env python3
"""Generate ``mdmserver/protocol/secret_keys.json``: the keys Apple's schema marks secret.

Reads ``conformance/apple-schema/summary.json`` (a digest of github.com/apple/device-management, MIT)
and applies :func:`mdmserver.protocol.secrets.schema_says_secret` to every key of every payload,
command (request and response) and check-in message. Writes

- ``names``: key names that are secret wherever the schema uses them;
- ``payloads``: per payload type, its top-level keys the schema marks secret (names the schema also
  uses for non-secret values, such as ``PayloadContent`` of a PKCS#12 payload, are secret only there);
- ``not_secret_names``: key names the schema knows (of any type: a device may send a flag's key
  with a string) and never marks secret, although the broader name rule for unknown keys
  (:func:`names_a_secret`: a secret word anywhere in the name) would take them for secrets
  (``PasscodeLockGracePeriod``, ``PasscodePresent``, ``TokenData``, the push ``Token``).

Usage: ``python tools/gen_secret_keys.py [path/to/summary.json]``. ``tests/protocol/test_secrets.py``
checks the checked-in file matches.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mdmserver.protocol.secrets import names_a_secret, schema_says_secret  # noqa: E402

DEFAULT_SOURCE = Path("/work/shared/conformance/apple-schema/summary.json")
OUT = ROOT / "mdmserver" / "protocol" / "secret_keys.json"


def secret_table(summary: dict) -> dict:
    secret_names: set[str] = set()
    public_names: set[str] = set()
    known_names: set[str] = set()
    payloads: dict[str, set[str]] = {}

    def visit(key: dict, owner: dict | None, top_level_of: str | None) -> None:
        if key.get("key") != "ANY":
            # flags too: a device may send a flag's key with a string ("PasscodePresent": "yes")
            known_names.add(key["key"])
        if schema_says_secret(key, owner):
            secret_names.add(key["key"])
            if top_level_of is not None and key["path"] == key["key"]:
                payloads.setdefault(top_level_of, set()).add(key["key"])
        elif key.get("type") in ("string", "data"):
            public_names.add(key["key"])

    for entry in summary["payloads"]:
        for key in entry.get("keys") or []:
            visit(key, entry, entry["payload_type"])
    for entry in summary["commands"]:
        for key in (entry.get("request_keys") or []) + (entry.get("response_keys") or []):
            visit(key, entry, None)
    for entry in summary["checkin"]:
        for key in (entry.get("keys") or []) + (entry.get("response_keys") or []):
            visit(key, entry, None)
    return {
        "source": summary.get("source"),
        "source_commit": summary.get("source_commit"),
        "licence": "MIT, Copyright (c) 2022-2024 Apple Inc. (apple/device-management)",
        "names": sorted(secret_names - public_names),
        "payloads": {ptype: sorted(keys) for ptype, keys in sorted(payloads.items())},
        "not_secret_names": sorted(n for n in known_names - secret_names if names_a_secret(n)),
    }


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else DEFAULT_SOURCE
    table = secret_table(json.loads(source.read_text(encoding="utf-8")))
    OUT.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(table['names'])} names, {len(table['payloads'])} payload types)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
