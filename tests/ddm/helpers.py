"""What the DDM tests share: DeclarativeManagement check-ins sent by a simulated device, and reads."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from mdmserver.records.devices import Device
from mdmserver.simulator.device import SimulatedDevice

DEADLINE = "2026-12-08T18:00:00"


def ddm(sim: SimulatedDevice, endpoint: str, data: bytes | None = None, **extra: Any) -> tuple[int, Any]:
    """Send a DeclarativeManagement check-in (signed with the device's identity); (status, JSON or None)."""
    message: dict[str, Any] = {"MessageType": "DeclarativeManagement", "UDID": sim.udid, "Endpoint": endpoint,
                               **extra}
    if data is not None:
        message["Data"] = data
    status, body = sim.send("/mdm/checkin", message)
    if status != 200:
        return status, body.decode()  # device routes answer errors in short plain text
    return status, (json.loads(body) if body else None)


def tokens(sim: SimulatedDevice) -> str:
    status, body = ddm(sim, "tokens")
    assert status == 200, body
    return body["SyncTokens"]["DeclarationsToken"]


def items(sim: SimulatedDevice) -> dict[str, Any]:
    status, body = ddm(sim, "declaration-items")
    assert status == 200, body
    return body


def fetch_all(sim: SimulatedDevice) -> dict[str, dict[str, Any]]:
    """Every declaration the items name, fetched one by one: identifier → document."""
    body = items(sim)
    kinds = {"Activations": "activation", "Configurations": "configuration", "Assets": "asset",
             "Management": "management"}
    result = {}
    for key, kind in kinds.items():
        for entry in body["Declarations"][key]:
            status, doc = ddm(sim, f"declaration/{kind}/{entry['Identifier']}")
            assert status == 200, doc
            assert doc["ServerToken"] == entry["ServerToken"]
            result[doc["Identifier"]] = doc
    return result


def device_id(db_session, sim: SimulatedDevice) -> int:
    db_session.expire_all()
    return db_session.scalar(select(Device.id).where(Device.udid == sim.udid))


def report(sim: SimulatedDevice, document: dict[str, Any] | bytes) -> tuple[int, Any]:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    return ddm(sim, "status", data)
