"""The DDM resources of the admin API: a device's declarations with their reported status, and its
status items and errors."""

from __future__ import annotations

from typing import Any

from mdmserver.api.apidoc import ApiDoc, Reply
from mdmserver.api.jsonapi import resource
from mdmserver.db import isoformat


def declaration_resource(device_id: int, entry: dict[str, Any]) -> dict[str, Any]:
    reported = entry["reported"]
    if reported is not None:
        reported = {**reported, "updated_at": isoformat(reported["updated_at"])}
    return resource("ddm_declarations", entry["identifier"], {
        "device_id": str(device_id), "identifier": entry["identifier"], "kind": entry["kind"],
        "declaration_type": entry["type"], "server_token": entry["server_token"], "reported": reported,
    })


def status_resource(status: Any) -> dict[str, Any]:
    """``status``: a ``ddm.service.DeviceStatus``."""
    return resource("ddm_status", status.device_id, {
        "declarations_token": status.declarations_token,
        "reported_at": isoformat(status.reported_at),
        "status_items": [{"key_path": k, "value": v, "updated_at": isoformat(status.updated_at[k])}
                         for k, v in status.items.items()],
        "errors": status.errors,
    }, links={"self": f"/api/v1/devices/{status.device_id}/ddm_status"})


OPENAPI: dict[str, ApiDoc] = {
    "ddm.device_declarations": ApiDoc(type="ddm_declarations", reply=Reply.COLLECTION),
    "ddm.device_status": ApiDoc(type="ddm_status"),
    "ddm_device.legacy_profile": ApiDoc(reply=Reply.FILE),
}
