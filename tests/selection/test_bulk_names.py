"""Naming many devices one by one: a documented cap (422 with a pointer) and no quadratic work below it.

The cap (10,000, docs/security.md) is written here, not read from the product: a request may name at
most 10,000 devices by id, UDID or serial number; larger sets are named by group, filter or all_devices.
"""

from __future__ import annotations

import time

from mdmserver.selection.resolve import resolve_devices
from tests.factories import make_device, make_wifi_profile

CAP = 10_000
JSONAPI = "application/vnd.api+json"


def _unknown(count: int, tag: str = "X") -> list[str]:
    return [f"{tag}{n:07d}-UNKNOWN" for n in range(count)]


def _error(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:300])
    body = response.get_json()
    assert body["meta"]["request_id"]
    return body["errors"][0]


def _profile(db_session) -> int:
    return make_wifi_profile(db_session, "com.example.cap", display_name="Cap").id


def test_more_names_than_the_cap_is_422_with_a_pointer(client, auth, db_session):
    h = auth("read", "write")
    too_many = _unknown(CAP + 1)
    error = _error(client.post("/api/v1/actions/scan", json={"devices": too_many}, headers=h), 422)
    assert error["source"]["pointer"] == "/devices" and "10000" in error["detail"]

    profile_id = _profile(db_session)
    error = _error(client.post(f"/api/v1/profiles/{profile_id}/assignments", json={"devices": too_many},
                               headers=h), 422)
    assert error["source"]["pointer"] == "/devices"

    group = client.post("/api/v1/device_groups", headers={**h, "Content-Type": JSONAPI},
                        json={"data": {"type": "device_groups", "attributes": {"name": "cap", "kind": "static"}}})
    assert group.status_code == 201, group.get_data(as_text=True)
    linkage = {"data": [{"type": "devices", "id": name} for name in too_many]}
    error = _error(client.post(f"/api/v1/device_groups/{group.get_json()['data']['id']}/relationships/devices",
                               json=linkage, headers={**h, "Content-Type": JSONAPI}), 422)
    assert error["source"]["pointer"] == "/data"

    error = _error(client.delete(f"/api/v1/custom_attributes?names=a&devices={','.join(too_many)}", headers=h), 422)
    assert error["source"]["parameter"] == "devices"


def test_the_cap_itself_is_accepted(client, auth, db_session):
    """Exactly 10,000 names (all unknown but one) is a normal answer: one success, the rest listed once each."""
    h = auth("read", "write")
    device = make_device(db_session)
    names = [*_unknown(CAP - 2), device.udid, _unknown(1)[0]]  # the last name repeats the first
    bulk = client.post("/api/v1/actions/scan", json={"devices": names}, headers=h)
    assert bulk.status_code == 200, bulk.get_data(as_text=True)[:300]
    body = bulk.get_json()
    assert body["success_count"] == 1
    assert body["not_applicable_count"] == CAP - 2


def _best_of(runs: int, fn) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def test_resolving_unknown_names_is_not_quadratic(db_session):
    """10,000 unknown names cost about 5× what 2,000 do (a list membership check made it ~25×).

    Relative times of the same run, best of three, with a generous bound: linear work stays far below
    it on a loaded machine, quadratic work far above it.
    """
    make_device(db_session)
    small, large = _unknown(2_000, "S"), _unknown(CAP, "L")
    assert resolve_devices(db_session, large).missing == large  # every unknown name listed once, in order
    t_small = _best_of(3, lambda: resolve_devices(db_session, small))
    t_large = _best_of(3, lambda: resolve_devices(db_session, large))
    assert t_large < 12 * t_small, f"2,000 names: {t_small:.3f}s, 10,000 names: {t_large:.3f}s"
