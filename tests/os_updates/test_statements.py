"""The software-update reads and the progress checks are set-based: the same number of SQL statements
for 5 and for 50 devices (the viability check, the fleet view, a reconcile that queues OSUpdateStatus and
DeviceInformation)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import insert, update

from mdmserver.db import utcnow
from mdmserver.records.blueprints import BlueprintOSUpdate
from mdmserver.records.devices import AvailableOSUpdate, Device
from tests.blueprints.helpers import created
from tests.checkin.test_connect_statements import count_statements
from tests.factories import seed_devices


def _statements(db_session, call: Callable[[], None]) -> int:
    with count_statements() as seen:
        call()
    return len(seen)


def test_statement_counts_do_not_grow_with_the_devices(client, auth, db_session):
    h = auth("read", "write")
    client.get("/api/v1/os_updates", headers=h)  # the token is looked up once, outside the counts
    counts: dict[int, dict[str, int]] = {}
    for size in (3, 5, 50):  # the first pass stores the progress commands' (empty) parameters once
        ids = seed_devices(db_session, size, start=size * 1000, platform="ios", os_version="17.5", is_supervised=True)
        db_session.execute(update(Device).where(Device.id.in_(ids)).values(os_updates_reported_at=utcnow()))
        db_session.execute(insert(AvailableOSUpdate), [
            {"device_id": i, "version": "17.6", "product_key": "iOSUpdate21G80", "reported_at": utcnow()} for i in ids])
        db_session.commit()
        doc = created(client, h, name=f"n{size}", scope={"devices": ids}, os_update={"version": "17.6"})
        assert doc["meta"]["reconcile"]["os_update_queued"] == size
        # the devices accepted it (as their UpdateResults would say): the upkeep follows them
        db_session.execute(update(BlueprintOSUpdate).where(BlueprintOSUpdate.blueprint_id == int(doc["data"]["id"]))
                           .values(status="scheduled"))
        db_session.commit()
        mine: dict[str, int] = {}

        def reconcile(blueprint_id=doc["data"]["id"], size=size):
            answer = client.post(f"/api/v1/blueprints/{blueprint_id}/reconcile", headers=h).get_json()
            assert answer["os_update_checks_queued"] == size

        def viability(ids=ids, size=size):
            answer = client.get(f"/api/v1/actions/update_os/viability?ids={','.join(map(str, ids))}&version=17.6",
                                headers=h).get_json()
            assert answer["not_eligible_count"] == size  # each has an update pending

        def summary():
            assert client.get("/api/v1/os_updates", headers=h).status_code == 200

        mine["reconcile"] = _statements(db_session, reconcile)
        mine["viability"] = _statements(db_session, viability)
        mine["summary"] = _statements(db_session, summary)
        counts[size] = mine
    assert counts[5] == counts[50], counts
