"""What the blueprint tests share: admin requests and queue reads."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from mdmserver.collaborators import secret_box
from mdmserver.commands.service import command_parameters
from mdmserver.records.commands import Command

JSONAPI = "application/vnd.api+json"


def create(client, h, **attributes: Any):
    return client.post("/api/v1/blueprints", headers={**h, "Content-Type": JSONAPI},
                       json={"data": {"type": "blueprints", "attributes": attributes}})


def created(client, h, **attributes: Any) -> dict[str, Any]:
    response = create(client, h, **attributes)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def patch(client, h, blueprint_id: str, **attributes: Any) -> dict[str, Any]:
    response = client.patch(f"/api/v1/blueprints/{blueprint_id}", headers={**h, "Content-Type": JSONAPI},
                            json={"data": {"type": "blueprints", "id": str(blueprint_id), "attributes": attributes}})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def group(client, h, **attributes: Any) -> int:
    response = client.post("/api/v1/device_groups", headers={**h, "Content-Type": JSONAPI},
                           json={"data": {"type": "device_groups", "attributes": attributes}})
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["data"]["id"])


def commands(db_session, request_type: str | None = None, device_id: int | None = None) -> list[Command]:
    db_session.expire_all()
    stmt = select(Command).order_by(Command.id)
    if request_type is not None:
        stmt = stmt.where(Command.request_type == request_type)
    if device_id is not None:
        stmt = stmt.where(Command.device_id == device_id)
    return list(db_session.scalars(stmt))


def parameters(command: Command) -> dict[str, Any]:
    return command_parameters(command, secret_box())


def states(client, h, url: str) -> list[dict[str, Any]]:
    response = client.get(url, headers=h)
    assert response.status_code == 200, response.get_json()
    return [d["attributes"] for d in response.get_json()["data"]]
