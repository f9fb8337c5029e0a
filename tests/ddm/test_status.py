"""DDM status reports: stored per device from real devices' reports, merged incrementally, hostile ones
refused with nothing stored, readable through the API, and driving the blueprint's OS item state."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from mdmserver.ddm.models import DDMDeclarationStatus, DDMDevice, DDMStatusItem
from tests.blueprints.helpers import created, states
from tests.ddm.helpers import DEADLINE, device_id, items, report

KMFDDM = "device-messages/jessepeterson__kmfddm"
REPORTS = {
    "first": f"{KMFDDM}/test/e2e/testdata/status.1st.json",
    "error": f"{KMFDDM}/test/e2e/testdata/status.D0.error.json",
    "full": f"{KMFDDM}/ddm/testdata/A047820F-FC6B-4104-BED0-466876D82BB8.20220628-103225.001918.status.json",
}


def _status(client, h, pid: int) -> dict:
    response = client.get(f"/api/v1/devices/{pid}/ddm_status", headers=h)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]["attributes"]


def _items(client, h, pid: int) -> dict:
    return {i["key_path"]: i["value"] for i in _status(client, h, pid)["status_items"]}


def test_real_status_reports_are_stored_and_readable(client, auth, db_session, enrolled, conformance_dir):
    h = auth("read")
    phone = enrolled("macos")
    phone.os_version = "13.3.1"  # the first report's own device: older than FullReport, its arrays are whole
    assert phone.authenticate() == 200 and phone.token_update() == 200
    pid = device_id(db_session, phone)
    first = (conformance_dir / REPORTS["first"]).read_bytes()
    status, body = report(phone, first)
    assert status == 200 and body is None
    stored = _items(client, h, pid)
    assert stored["device.operating-system.version"] == "13.3.1"
    assert stored["device.operating-system.build-version"] == "22E261"
    assert stored["device.operating-system.supplemental.extra-version"] == "(a)"
    assert stored["device.identifier.serial-number"] == "ZRMXJQTTFX"
    capabilities = stored["management.client-capabilities"]  # an Apple item is kept whole
    assert capabilities["supported-versions"] == ["1.0.0"]
    assert "management.declarations" not in stored  # kept as per-declaration statuses

    status, _ = report(phone, (conformance_dir / REPORTS["full"]).read_bytes())
    assert status == 200
    db_session.expire_all()
    rows = {r.identifier: r for r in db_session.scalars(
        select(DDMDeclarationStatus).where(DDMDeclarationStatus.device_id == pid))}
    assert len(rows) == 5
    failed = rows["4D6F8451-C089-4E65-A615-7C6EFF154F72"]
    assert (failed.kind, failed.active, failed.valid) == ("configuration", True, "invalid")
    assert failed.reasons[0]["code"] == "Error.ConfigurationCannotBeApplied"
    assert rows["AF0E633E-7ADB-4B2A-A48C-1B20AA271D08"].kind == "management"
    merged = _items(client, h, pid)
    assert merged["device.operating-system.version"] == "16.0"  # the later report's value wins
    assert merged["device.model.marketing-name"] == "iPhone 8 Plus"
    # items only the earlier report carried are still there (merged, not replaced)
    assert merged["device.identifier.serial-number"] == "ZRMXJQTTFX"
    assert merged["device.operating-system.supplemental.extra-version"] == "(a)"

    # the third real report: a declaration's status; the device sends no FullReport (it predates the key),
    # so each kind it lists replaces that kind's statuses
    status, _ = report(phone, (conformance_dir / REPORTS["error"]).read_bytes())
    assert status == 200
    db_session.expire_all()
    kinds = dict(db_session.execute(select(DDMDeclarationStatus.identifier, DDMDeclarationStatus.kind)
                                    .where(DDMDeclarationStatus.device_id == pid)).all())
    assert kinds == {"com.example.test": "configuration"}


def test_incremental_reports_merge(client, auth, db_session, enrolled):
    h = auth("read")
    phone = enrolled("ios")
    pid = device_id(db_session, phone)
    assert report(phone, {"StatusItems": {
        "device": {"operating-system": {"version": "17.5", "build-version": "21F79"}},
        "softwareupdate": {"install-state": "none"}}, "Errors": []})[0] == 200
    assert report(phone, {"StatusItems": {"softwareupdate": {
        "install-state": "downloading", "pending-version": {"os-version": "17.6", "build-version": "21G80"}}},
        "Errors": [{"StatusItem": "softwareupdate.failure-reason", "Reasons": [{"Code": "Error.X"}]}]})[0] == 200
    stored = _items(client, h, pid)
    assert stored == {
        "device.operating-system.version": "17.5", "device.operating-system.build-version": "21F79",
        "softwareupdate.install-state": "downloading",
        "softwareupdate.pending-version": {"os-version": "17.6", "build-version": "21G80"},
    }
    assert _status(client, h, pid)["errors"][0]["StatusItem"] == "softwareupdate.failure-reason"
    # a report without errors clears them (they are the last report's)
    assert report(phone, {"StatusItems": {}, "Errors": []})[0] == 200
    assert _status(client, h, pid)["errors"] == []
    assert len(_items(client, h, pid)) == 4


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


HOSTILE = {
    "not json": b"\xff\xfe garbage",
    "array": b"[1, 2, 3]",
    "deep": b'{"StatusItems": {"a": ' + _deep(100_000) + b"}}",
    "too many values": json.dumps({"StatusItems": {"x": list(range(30_000))}}).encode(),
    "too many items": json.dumps({"StatusItems": {f"k{i}": i for i in range(600)}}).encode(),
    "items not an object": b'{"StatusItems": [1]}',
    "errors not an array": b'{"StatusItems": {}, "Errors": {"a": 1}}',
    "declarations not a dict": b'{"StatusItems": {"management": {"declarations": [1]}}}',
    "declaration without identifier": json.dumps({"StatusItems": {"management": {"declarations": {
        "configurations": [{"active": True}]}}}}).encode(),
    "declaration active not bool": json.dumps({"StatusItems": {"management": {"declarations": {
        "configurations": [{"identifier": "a", "active": "yes"}]}}}}).encode(),
    "duplicate declaration": json.dumps({"StatusItems": {"management": {"declarations": {
        "configurations": [{"identifier": "a"}], "activations": [{"identifier": "a"}]}}}}).encode(),
    "long path": json.dumps({"StatusItems": {"a" * 250: 1}}).encode(),
    "huge item": json.dumps({"StatusItems": {"test": {"string-value": "x" * 20_000}}}).encode(),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_reports_are_refused_and_nothing_is_stored(db_session, enrolled, case):
    phone = enrolled("ios")
    pid = device_id(db_session, phone)
    # a valid item first, in the same report as the fault where the shape allows: nothing may land
    status, body = report(phone, HOSTILE[case])
    assert status == 400, (case, body)
    db_session.expire_all()
    for table in (DDMStatusItem, DDMDeclarationStatus, DDMDevice):
        assert db_session.scalar(select(func.count()).select_from(table).where(table.device_id == pid)) == 0


def test_a_report_past_the_size_limit_is_413(db_session, enrolled):
    phone = enrolled("ios")
    status, _ = report(phone, json.dumps({"StatusItems": {"test": {"string-value": "x" * 300_000}}}).encode())
    assert status in (413,)


def test_items_per_device_are_bounded(db_session, enrolled, monkeypatch):
    from mdmserver.ddm import service
    monkeypatch.setattr(service, "MAX_ITEMS_PER_DEVICE", 10)
    phone = enrolled("ios")
    pid = device_id(db_session, phone)
    assert report(phone, {"StatusItems": {"test": {f"k{i}": i for i in range(8)}}})[0] == 200
    assert report(phone, {"StatusItems": {"test": {f"k{i}": i + 1 for i in range(8)}}})[0] == 200  # same keys
    status, _ = report(phone, {"StatusItems": {"other": {f"k{i}": i for i in range(3)}}})
    assert status == 400
    db_session.expire_all()
    assert db_session.scalar(select(func.count()).select_from(DDMStatusItem)
                             .where(DDMStatusItem.device_id == pid)) == 8


def test_declarations_view_shows_each_declaration_with_its_reported_status(client, auth, db_session, enrolled):
    h = auth("read", "write")
    phone = enrolled("ios")
    pid = device_id(db_session, phone)
    created(client, h, name="view", scope={"devices": [pid]}, os_update={"version": "17.6", "deadline": DEADLINE})
    listed = items(phone)["Declarations"]
    configs = {c["Identifier"]: c["ServerToken"] for c in listed["Configurations"]}
    enforcement = next(i for i in configs if i.endswith(".softwareupdate"))
    statuses = [{"identifier": i, "server-token": t, "active": True, "valid": "valid"} for i, t in configs.items()]
    statuses[[s["identifier"] for s in statuses].index(enforcement)].update(
        valid="invalid", reasons=[{"code": "Error.ConfigurationCannotBeApplied", "description": "no"}])
    assert report(phone, {"StatusItems": {"management": {"declarations": {
        "activations": [], "configurations": statuses, "assets": [], "management": []}}}})[0] == 200
    response = client.get(f"/api/v1/devices/{pid}/declarations", headers=auth("read"))
    assert response.status_code == 200
    rows = {r["attributes"]["identifier"]: r["attributes"] for r in response.get_json()["data"]}
    assert set(rows) == {c["Identifier"] for k in listed.values() for c in k}
    assert rows[enforcement]["declaration_type"] == "com.apple.configuration.softwareupdate.enforcement.specific"
    assert rows[enforcement]["reported"]["valid"] == "invalid" and rows[enforcement]["reported"]["current"] is True
    assert rows[enforcement]["reported"]["reasons"][0]["code"] == "Error.ConfigurationCannotBeApplied"
    activation = next(i for i in rows if i.endswith(".activation"))
    assert rows[activation]["reported"] is None
    assert "Payload" not in json.dumps(rows)
    # scope read is needed, and enough
    assert client.get(f"/api/v1/devices/{pid}/declarations").status_code == 401
    assert client.get(f"/api/v1/devices/{pid}/ddm_status", headers=auth("read")).status_code == 200
    assert client.get("/api/v1/devices/999999/ddm_status", headers=auth("read")).status_code == 404


def test_the_blueprint_os_item_follows_the_status_reports(client, auth, db_session, enrolled):
    h = auth("read", "write")
    phone = enrolled("ios")
    pid = device_id(db_session, phone)
    doc = created(client, h, name="progress", scope={"devices": [pid]},
                  os_update={"version": "17.6", "deadline": DEADLINE})
    url = f"/api/v1/blueprints/{doc['data']['id']}/devices"

    def os_item() -> dict:
        (row,) = states(client, h, url)
        return row["os_update"]

    assert os_item()["state"] == "queued" and os_item()["command_uuid"] is None
    report(phone, {"StatusItems": {"softwareupdate": {"install-state": "downloading"}}})
    assert os_item()["state"] == "queued" and "downloading" in os_item()["detail"]
    report(phone, {"StatusItems": {"softwareupdate": {
        "install-state": "failed", "failure-reason": {"count": 1, "reason": "InstallFailed", "timestamp": "x"}}}})
    assert os_item()["state"] == "failed" and "InstallFailed" in os_item()["detail"]
    report(phone, {"StatusItems": {"softwareupdate": {"install-state": "installing"}}})
    assert os_item()["state"] == "queued"
    report(phone, {"StatusItems": {"device": {"operating-system": {"version": "17.6"}},
                                   "softwareupdate": {"install-state": "none"}}})
    assert os_item()["state"] == "installed" and "17.6" in os_item()["detail"]


def _declaration_rows(db_session, pid: int) -> dict[str, tuple[str, str | None]]:
    db_session.expire_all()
    return {r.identifier: (r.kind, r.valid) for r in db_session.scalars(
        select(DDMDeclarationStatus).where(DDMDeclarationStatus.device_id == pid))}


def _declarations(statuses: dict[str, list[dict]]) -> dict:
    return {"management": {"declarations": statuses}}


def test_an_incremental_report_updates_only_the_declarations_it_lists(db_session, enrolled):
    """Apple's StatusReport: without ``FullReport`` a declaration array lists only the declarations whose
    status changed, so the others keep what they reported; a ``FullReport`` array is the whole list."""
    phone = enrolled("ios")
    pid = device_id(db_session, phone)
    first = [{"identifier": f"c{i}", "active": True, "valid": "valid", "server-token": "t1"} for i in range(3)]
    assert report(phone, {"StatusItems": _declarations({"configurations": first, "activations": [
        {"identifier": "a", "active": True, "valid": "valid", "server-token": "t1"}]}), "FullReport": True})[0] == 200
    assert _declaration_rows(db_session, pid) == {
        "a": ("activation", "valid"), "c0": ("configuration", "valid"), "c1": ("configuration", "valid"),
        "c2": ("configuration", "valid")}
    # one configuration changed: the others (and the activation) keep their status
    changed = [{"identifier": "c1", "active": False, "valid": "invalid", "server-token": "t2"}]
    assert report(phone, {"StatusItems": _declarations({"configurations": changed})})[0] == 200
    assert _declaration_rows(db_session, pid) == {
        "a": ("activation", "valid"), "c0": ("configuration", "valid"), "c1": ("configuration", "invalid"),
        "c2": ("configuration", "valid")}
    # a full report replaces the kinds it lists whole: c0 and c2 are gone, the activations untouched
    assert report(phone, {"StatusItems": _declarations({"configurations": changed}), "FullReport": True})[0] == 200
    assert _declaration_rows(db_session, pid) == {"a": ("activation", "valid"), "c1": ("configuration", "invalid")}


def test_without_full_report_a_device_before_ios_17_sends_whole_arrays(db_session, enrolled):
    old = enrolled("ios", seed=16)
    old.os_version = "16.7.2"
    assert old.authenticate() == 200 and old.token_update() == 200
    pid = device_id(db_session, old)
    both = [{"identifier": "c0", "valid": "valid"}, {"identifier": "c1", "valid": "valid"}]
    assert report(old, {"StatusItems": _declarations({"configurations": both})})[0] == 200
    assert report(old, {"StatusItems": _declarations({"configurations": both[1:]})})[0] == 200
    assert _declaration_rows(db_session, pid) == {"c1": ("configuration", "valid")}
    # an explicit FullReport false is incremental whatever the version
    assert report(old, {"StatusItems": _declarations({"configurations": both[:1]}), "FullReport": False})[0] == 200
    assert set(_declaration_rows(db_session, pid)) == {"c0", "c1"}
    assert report(old, {"StatusItems": {}, "FullReport": "yes"})[0] == 400


def test_declaration_statuses_per_device_are_bounded(db_session, enrolled, monkeypatch):
    from mdmserver.ddm import service
    monkeypatch.setattr(service, "MAX_ITEMS_PER_DEVICE", 10)
    phone = enrolled("ios")
    pid = device_id(db_session, phone)
    rows = [{"identifier": f"c{i}", "valid": "valid"} for i in range(8)]
    assert report(phone, {"StatusItems": _declarations({"configurations": rows})})[0] == 200
    more = [{"identifier": f"d{i}", "valid": "valid"} for i in range(3)]
    assert report(phone, {"StatusItems": _declarations({"configurations": more})})[0] == 400
    assert len(_declaration_rows(db_session, pid)) == 8
    # a full report replaces the list, so it is not refused for what it replaces
    assert report(phone, {"StatusItems": _declarations({"configurations": more}), "FullReport": True})[0] == 200
    assert set(_declaration_rows(db_session, pid)) == {"d0", "d1", "d2"}
