"""A full re-evaluation is a constant number of SQL statements whatever the number of devices, and its
verdicts are right for the seeded inventory."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, insert, select

from mdmserver.compliance import service
from mdmserver.compliance.models import CompliancePolicy, CompliancePolicyTarget, DevicePolicyResult
from mdmserver.db import utcnow
from mdmserver.records.attributes import CustomAttribute
from mdmserver.records.blueprints import Blueprint, BlueprintMember
from mdmserver.records.compliance import DeviceCompliance
from mdmserver.records.groups import DeviceGroup
from tests.checkin.test_connect_statements import count_statements
from tests.factories import seed_devices


def _policies(db_session) -> dict[str, int]:
    group = DeviceGroup(name="iPhones", kind="smart", filter={"platform": "ios"})
    db_session.add(group)
    db_session.flush()
    rows = {
        "os": CompliancePolicy(name="os", rule="os_version_min", parameters={"versions": {"ios": "17.4", "macos": "14.5"}},
                               all_devices=True),
        "supervised": CompliancePolicy(name="supervised", rule="supervised", parameters={}),
        "dept": CompliancePolicy(name="dept", rule="custom_attribute", parameters={"name": "dept", "value": "IT"},
                                 all_devices=True, enabled=False),
        "deadline": CompliancePolicy(name="deadline", rule="os_update_deadline", parameters={}, all_devices=True),
    }
    db_session.add_all(rows.values())
    db_session.flush()
    db_session.add(CompliancePolicyTarget(policy_id=rows["supervised"].id, group_id=group.id))
    db_session.flush()
    return {name: p.id for name, p in rows.items()}


def _status_counts(db_session, policy_id: int) -> dict[str, int]:
    return dict(db_session.execute(select(DevicePolicyResult.status, func.count())
                                   .where(DevicePolicyResult.policy_id == policy_id)
                                   .group_by(DevicePolicyResult.status)).all())


def test_full_reevaluation_statement_count_is_constant(db_session):
    ids = _policies(db_session)
    seeded = seed_devices(db_session, 100)
    first = seeded[0]
    # an OS target 17.4 overdue since yesterday for the first 100 devices
    blueprint = Blueprint(name="overdue", os_update_version="17.4",
                          os_update_deadline=(utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S"))
    db_session.add(blueprint)
    db_session.flush()
    db_session.execute(insert(BlueprintMember), [{"blueprint_id": blueprint.id, "device_id": d, "status": "in_scope"}
                                                 for d in seeded])
    with count_statements() as small:
        service.evaluate(db_session)
    with count_statements() as one_small:  # the connect path: one device judged after its answer
        service.evaluate(db_session, [first])
    # the seeded OS versions: ios 17.4 / ipados 17.3 / macos 14.4 / ios 16.7 in turn
    assert _status_counts(db_session, ids["os"]) == {"compliant": 25, "non_compliant": 50}
    # the deadline rule judges the blueprint's members only, on every platform (macOS 14.4 < 17.4)
    assert _status_counts(db_session, ids["deadline"]) == {"compliant": 25, "non_compliant": 75}
    seed_devices(db_session, 9900, start=100)
    with count_statements() as large:
        transitions = service.evaluate(db_session)
    assert len(large) == len(small), (small, large)
    with count_statements() as one_large:
        service.evaluate(db_session, [first])
    assert len(one_large) == len(one_small)
    assert len(transitions) == 9900  # the new devices' first states; the first 100 did not change
    assert _status_counts(db_session, ids["os"]) == {"compliant": 2500, "non_compliant": 5000}
    assert _status_counts(db_session, ids["deadline"]) == {"compliant": 25, "non_compliant": 75}
    # the supervised rule applies to the iPhones only (the smart group): every third seed is unsupervised
    supervised = _status_counts(db_session, ids["supervised"])
    assert sum(supervised.values()) == 5000
    assert db_session.scalar(select(func.count()).select_from(DeviceCompliance)) == 10000
    states = dict(db_session.execute(select(DeviceCompliance.state, func.count()).group_by(DeviceCompliance.state)).all())
    assert set(states) <= {"compliant", "non_compliant"} and states["non_compliant"] >= 5000

    # nothing changed: a re-run writes no history
    with count_statements() as again:
        assert service.evaluate(db_session) == []
    assert len(again) == len(small)

    # enabling the attribute policy: devices with dept=IT comply, the rest violate it
    db_session.get(CompliancePolicy, ids["dept"]).enabled = True
    db_session.add(CustomAttribute(device_id=transitions[0].device_id, name="dept", value="IT"))
    db_session.flush()
    service.evaluate(db_session)
    assert _status_counts(db_session, ids["dept"]) == {"compliant": 1, "non_compliant": 9999}


def test_version_keys_compare_numerically(db_session):
    assert service.version_key("17.10") > service.version_key("17.9") > service.version_key("17")
    assert service.version_key("17.4") == service.version_key("17.4.0")
    for bad in ("17.x", "", "1.2.3.4", "17..1", "1234567"):
        try:
            service.version_key(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
