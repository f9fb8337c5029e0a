"""Compliance policies and their evaluation, set-based.

Each policy is one rule (:class:`RuleType`) compiled to SQL over the inventory tables: a condition
"enough inventory to judge" (``known``), the condition itself (``holds``), the observed value, and
which devices the rule is about at all (``applies``: a minimum OS for iOS says nothing about a Mac).
:func:`evaluate` runs every enabled policy over every device (or the devices given) in a constant
number of statements, whatever the number of devices: the per-policy SELECTs are one ``UNION ALL``
that updates, inserts and deletes ``device_policy_results`` (three statements), then the overall
state per device is one ``GROUP BY`` that writes the history of transitions (``INSERT … SELECT …
RETURNING``) and ``device_compliance`` (two statements). Only the policies, their targets and each
targeted group's membership condition are read beforehand.

Remediation is claimed, not looped: :func:`claim_remediations` is one ``UPDATE … RETURNING`` of the
results whose remediation is due and not yet claimed, so two workers never claim the same one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    String,
    and_,
    case,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from mdmserver.audit.service import record_event
from mdmserver.compliance.models import (
    ComplianceHistory,
    CompliancePolicy,
    CompliancePolicyTarget,
    DevicePolicyResult,
    RuleType,
)
from mdmserver.db import UTCDateTime, utcnow
from mdmserver.errors import Conflict, NotFound, UnprocessableEntity
from mdmserver.profiles.models import Profile
from mdmserver.records.attributes import CustomAttribute
from mdmserver.records.blueprints import LATEST, Blueprint, BlueprintMember, MemberStatus
from mdmserver.records.compliance import ComplianceState, DeviceCompliance
from mdmserver.records.devices import (
    AvailableOSUpdate,
    Device,
    DeviceSecurityInfo,
    InstalledApplication,
    InstalledProfile,
    Platform,
)
from mdmserver.records.groups import DeviceGroup, GroupKind
from mdmserver.selection.filters import group_condition
from mdmserver.selection.resolve import resolve_targets
from mdmserver.selection.sql import dialect_name, in_values

COMPLIANT = ComplianceState.COMPLIANT.value
NON_COMPLIANT = ComplianceState.NON_COMPLIANT.value
UNKNOWN = ComplianceState.UNKNOWN.value

#: the inventory answers the rules judge: after one of these is applied, the device is judged again
INVENTORY_INPUTS = frozenset({"DeviceInformation", "SecurityInfo", "ProfileList", "InstalledApplicationList",
                              "AvailableOSUpdates"})

#: the PostgreSQL advisory lock that orders evaluations: a full one takes it exclusively, a device's
#: own (the connect path) shared, so concurrent devices do not wait for each other but nobody reads
#: the states a full evaluation of another worker is rewriting (SQLite writers are serialized anyway)
EVALUATION_LOCK = 0x6D646D636F6D70

#: a version component has at most this many digits; the numeric key is a·S² + b·S + c with S = 10⁶
VERSION_DIGITS = 6
_SCALE = 10 ** VERSION_DIGITS


# --- versions, compared numerically -------------------------------------------------------------


def version_key(text: str) -> int:
    """``17.4.1`` → its numeric key (``17.10`` is above ``17.9``); ValueError for anything else."""
    parts = text.strip().split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() and p.isascii() and len(p) <= VERSION_DIGITS for p in parts):
        raise ValueError(f"{text!r} is not a version of one to three numbers (17, 17.4, 17.4.1)")
    a, b, c = ([int(p) for p in parts] + [0, 0])[:3]
    return (a * _SCALE + b) * _SCALE + c


def version_key_sql(session: Session, column: Any) -> ColumnElement[int | None]:
    """SQL: the numeric key of a version column (as :func:`version_key`; a fourth component is
    ignored), NULL when the text is not a dotted version of numbers."""
    if dialect_name(session) == "postgresql":
        def part(i: int) -> ColumnElement[int]:
            return func.coalesce(cast(func.nullif(func.split_part(column, ".", i), ""), BigInteger), 0)
        well_formed = column.op("~")(rf"^[0-9]{{1,{VERSION_DIGITS}}}(\.[0-9]{{1,{VERSION_DIGITS}}}){{0,3}}$")
        return case((well_formed, (part(1) * _SCALE + part(2)) * _SCALE + part(3)), else_=null())

    # SQLite: CAST('17.4.1' AS INTEGER) is 17 (the longest integer prefix); the rest after each dot
    def after_dot(text: Any) -> ColumnElement[str]:
        return case((func.instr(text, ".") > 0, func.substr(text, func.instr(text, ".") + 1)), else_="")

    rest1 = after_dot(column)
    rest2 = after_dot(rest1)
    glob = lambda pattern: column.op("GLOB")(pattern)  # noqa: E731
    well_formed = and_(
        column != "", ~glob("*[^0-9.]*"), ~glob("*..*"), ~glob(".*"), ~glob("*."),
        ~glob("*" + "[0-9]" * (VERSION_DIGITS + 1) + "*"),
        func.length(column) - func.length(func.replace(column, ".", "")) <= 3,
    )
    key = (cast(column, BigInteger) * _SCALE + cast(rest1, BigInteger)) * _SCALE + cast(rest2, BigInteger)
    return case((well_formed, key), else_=null())


# --- rules ----------------------------------------------------------------------------------------


@dataclass
class Compiled:
    """A rule as SQL on ``devices`` (with ``device_security_info`` outer-joined)."""

    known: ColumnElement[bool]
    holds: ColumnElement[bool]
    observed: ColumnElement[Any]
    applies: ColumnElement[bool]


def _when(known: ColumnElement[bool], observed: ColumnElement[Any]) -> ColumnElement[Any]:
    """The observed value, NULL while the inventory it comes from was not reported."""
    return case((known, observed), else_=null())


def _flag(column: Any) -> ColumnElement[str | None]:
    return case((column.is_(True), "true"), (column.is_(False), "false"), else_=null())


def _os_version_min(session: Session, params: dict[str, Any], now: datetime) -> Compiled:
    versions: dict[str, str] = params["versions"]
    key = version_key_sql(session, Device.os_version)
    minimum = case(*((Device.platform == platform, literal(version_key(v), BigInteger))
                     for platform, v in sorted(versions.items())), else_=null())
    return Compiled(
        known=and_(Device.platform.is_not(None), key.is_not(None)),
        holds=key >= minimum,
        observed=Device.os_version,
        applies=or_(Device.platform.is_(None), Device.platform.in_(sorted(versions))),
    )


def _passcode(session: Session, params: dict[str, Any], now: datetime) -> Compiled:
    info = DeviceSecurityInfo
    conditions = [info.passcode_present.is_(True), info.passcode_compliant.is_(True)]
    known = [info.passcode_present.is_not(None), info.passcode_compliant.is_not(None)]
    observed = case(
        (info.passcode_present.is_(False), "no passcode"),
        (info.passcode_compliant.is_(False), "passcode not compliant"),
        else_="passcode compliant",
    )
    if params.get("with_profiles"):
        conditions.append(info.passcode_compliant_with_profiles.is_(True))
        known.append(info.passcode_compliant_with_profiles.is_not(None))
        observed = case(
            (info.passcode_present.is_(False), "no passcode"),
            (info.passcode_compliant.is_(False), "passcode not compliant"),
            (info.passcode_compliant_with_profiles.is_(False), "passcode not compliant with profiles"),
            else_="passcode compliant",
        )
    return Compiled(known=and_(*known), holds=and_(*conditions), observed=_when(and_(*known), observed),
                    applies=true())


def _encryption(session: Session, params: dict[str, Any], now: datetime) -> Compiled:
    """FileVault on a Mac; data protection elsewhere (block- and file-level hardware encryption, bits
    1 and 2 of ``HardwareEncryptionCaps``, with a passcode set)."""
    info = DeviceSecurityInfo
    mac = Device.platform == Platform.MACOS.value
    data_protection = and_(info.hardware_encryption_caps.op("&")(3) == 3, info.passcode_present.is_(True))
    known = case((mac, info.fde_enabled.is_not(None)),
                 else_=and_(info.hardware_encryption_caps.is_not(None), info.passcode_present.is_not(None)))
    return Compiled(
        known=known,
        holds=case((mac, info.fde_enabled.is_(True)), else_=data_protection),
        observed=_when(known, case(
            (mac, case((info.fde_enabled.is_(True), "FileVault on"), else_="FileVault off")),
            else_=case((data_protection, "data protection on"), else_="data protection off"),
        )),
        applies=true(),
    )


def _supervised(session: Session, params: dict[str, Any], now: datetime) -> Compiled:
    return Compiled(known=Device.is_supervised.is_not(None), holds=Device.is_supervised.is_(True),
                    observed=_flag(Device.is_supervised), applies=true())


def _last_checkin(session: Session, params: dict[str, Any], now: datetime) -> Compiled:
    cutoff = now - timedelta(hours=params["hours"])
    return Compiled(known=Device.last_seen_at.is_not(None),
                    holds=Device.last_seen_at >= literal(cutoff, UTCDateTime()),
                    observed=cast(Device.last_seen_at, String), applies=true())


def _reported(model: Any, identifier: str) -> Compiled:
    """A profile or app the device reports: known once the device answered the list at all."""
    known = exists().where(model.device_id == Device.id)
    installed = exists().where(model.device_id == Device.id, model.identifier == identifier)
    return Compiled(known=known, holds=installed,
                    observed=case((~known, null()), (installed, "installed"), else_="not installed"),
                    applies=true())


def _profile_installed(session: Session, params: dict[str, Any], now: datetime) -> Compiled:
    return _reported(InstalledProfile, params["identifier"])


def _app_installed(session: Session, params: dict[str, Any], now: datetime) -> Compiled:
    return _reported(InstalledApplication, params["identifier"])


def _custom_attribute(session: Session, params: dict[str, Any], now: datetime) -> Compiled:
    name, value = params["name"], params["value"]
    mine = and_(CustomAttribute.device_id == Device.id, CustomAttribute.name == name)
    return Compiled(
        known=true(),
        holds=exists().where(mine, CustomAttribute.value == value),
        observed=select(func.substr(func.min(CustomAttribute.value), 1, 255)).where(mine).scalar_subquery(),
        applies=true(),
    )


#: a blueprint's OS-update deadline is a local date-time without a zone (the device's own clock); the
#: server does not know the device's zone, so a deadline counts as passed once it has passed on every
#: clock on Earth: the latest zone is UTC-12, so the UTC time must be at least the deadline + 12 hours
DEADLINE_SLACK = timedelta(hours=12)


def _os_update_deadline(session: Session, params: dict[str, Any], now: datetime) -> Compiled:
    """Blueprints the device is an in-scope member of, active, with an OS-update target and a deadline:
    the device violates the rule when one's deadline has passed (:data:`DEADLINE_SLACK`) and the device
    reports a version below that target (``latest``: below the newest version it reports as available)."""
    reported = version_key_sql(session, Device.os_version)
    newest = (select(AvailableOSUpdate.version)
              .where(AvailableOSUpdate.device_id == Device.id,
                     version_key_sql(session, AvailableOSUpdate.version).is_not(None))
              .order_by(version_key_sql(session, AvailableOSUpdate.version).desc(), AvailableOSUpdate.id)
              .limit(1).correlate(Device).scalar_subquery())
    target_text = case((Blueprint.os_update_version == LATEST, newest), else_=Blueprint.os_update_version)
    target_key = case((Blueprint.os_update_version == LATEST,
                       select(func.max(version_key_sql(session, AvailableOSUpdate.version)))
                       .where(AvailableOSUpdate.device_id == Device.id).correlate(Device).scalar_subquery()),
                      else_=version_key_sql(session, Blueprint.os_update_version))
    # the schema allows "2026-12-08 18:00:00" as well; both compare as text once the separator is a T
    deadline = func.replace(Blueprint.os_update_deadline, " ", "T")
    cutoff = (now - DEADLINE_SLACK).strftime("%Y-%m-%dT%H:%M:%S")

    def targets(*conditions: ColumnElement[bool]):
        return (select(Blueprint.id)
                .join(BlueprintMember, BlueprintMember.blueprint_id == Blueprint.id)
                .where(BlueprintMember.device_id == Device.id, BlueprintMember.status == MemberStatus.IN_SCOPE.value,
                       Blueprint.enabled.is_(True),
                       or_(Blueprint.start_on.is_(None), Blueprint.start_on <= literal(now, UTCDateTime())),
                       Blueprint.os_update_version.is_not(None), Blueprint.os_update_deadline.is_not(None),
                       *conditions)
                .correlate(Device))

    passed = deadline <= cutoff
    overdue = and_(passed, reported < target_key)
    first_overdue = (
        targets(overdue)
        .with_only_columns(func.substr(
            Device.os_version + " < " + target_text + " (deadline " + Blueprint.os_update_deadline
            + ", blueprint " + cast(Blueprint.id, String) + ")", 1, 255))
        .order_by(deadline, Blueprint.id).limit(1).scalar_subquery()
    )
    any_overdue = exists(targets(overdue))
    known = or_(reported.is_not(None), ~exists(targets(passed)))
    return Compiled(
        known=known,
        holds=~any_overdue,
        observed=case((and_(known, any_overdue), first_overdue), else_=Device.os_version),
        applies=exists(targets()),
    )


#: rule type → its compiler (the parameters were validated by the rule's schema)
RULES: dict[str, Callable[[Session, dict[str, Any], datetime], Compiled]] = {
    RuleType.OS_VERSION_MIN: _os_version_min,
    RuleType.PASSCODE: _passcode,
    RuleType.ENCRYPTION: _encryption,
    RuleType.SUPERVISED: _supervised,
    RuleType.LAST_CHECKIN: _last_checkin,
    RuleType.PROFILE_INSTALLED: _profile_installed,
    RuleType.APP_INSTALLED: _app_installed,
    RuleType.CUSTOM_ATTRIBUTE: _custom_attribute,
    RuleType.OS_UPDATE_DEADLINE: _os_update_deadline,
}


# --- policies -------------------------------------------------------------------------------------


def policies_enabled() -> ColumnElement[bool]:
    """EXISTS: some compliance policy is enabled. Without one a device's new inventory changes no
    compliance state, so a caller that reads this with other data (the connect path reads it with the
    device) can skip :func:`evaluate` and its policy query."""
    return exists().where(CompliancePolicy.enabled.is_(True))


def policies_query():
    return select(CompliancePolicy)


def get_policy(session: Session, policy_id: int) -> CompliancePolicy:
    policy = session.get(CompliancePolicy, policy_id)
    if policy is None:
        raise NotFound(f"no compliance policy {policy_id}")
    return policy


def _name_taken(session: Session, name: str, policy_id: int | None) -> None:
    clash = session.scalar(select(CompliancePolicy.id).where(CompliancePolicy.name == name))
    if clash is not None and clash != policy_id:
        raise Conflict(f"a compliance policy named {name!r} exists already ({clash})", code="name_taken")


def check_remediation(session: Session, remediation: dict[str, Any] | None,
                      pointer: str = "/data/attributes/remediation") -> None:
    """The profile or group a remediation names exists (a group: a static one, members are added)."""
    if not remediation:
        return
    if "profile_id" in remediation and session.get(Profile, remediation["profile_id"]) is None:
        raise UnprocessableEntity(f"no profile {remediation['profile_id']}", pointer=f"{pointer}/profile_id")
    if "group_id" in remediation:
        group = session.get(DeviceGroup, remediation["group_id"])
        if group is None or group.kind != GroupKind.STATIC:
            raise UnprocessableEntity(f"no static device group {remediation['group_id']}",
                                      pointer=f"{pointer}/group_id")


def create_policy(session: Session, values: dict[str, Any], *, actor: str | None) -> CompliancePolicy:
    _name_taken(session, values["name"], None)
    check_remediation(session, values.get("remediation"))
    policy = CompliancePolicy(created_by=actor, **values)
    session.add(policy)
    session.flush()
    record_event(session, "compliance_policy:create", "compliance_policies", policy.id,
                 {"name": policy.name, "rule": policy.rule})
    return policy


def update_policy(session: Session, policy: CompliancePolicy, values: dict[str, Any]) -> CompliancePolicy:
    if "name" in values:
        _name_taken(session, values["name"], policy.id)
    check_remediation(session, values.get("remediation"))
    for key, value in values.items():
        setattr(policy, key, value)
    policy.updated_at = utcnow()
    session.flush()
    record_event(session, "compliance_policy:update", "compliance_policies", policy.id, {"changed": sorted(values)})
    return policy


def delete_policy(session: Session, policy: CompliancePolicy) -> None:
    record_event(session, "compliance_policy:delete", "compliance_policies", policy.id, {"name": policy.name})
    session.execute(delete(DevicePolicyResult).where(DevicePolicyResult.policy_id == policy.id))
    session.execute(delete(CompliancePolicyTarget).where(CompliancePolicyTarget.policy_id == policy.id))
    session.delete(policy)
    session.flush()


def list_targets(session: Session, policy: CompliancePolicy) -> list[CompliancePolicyTarget]:
    return list(session.scalars(select(CompliancePolicyTarget).where(CompliancePolicyTarget.policy_id == policy.id)
                                .order_by(CompliancePolicyTarget.id)))


def add_targets(session: Session, policy: CompliancePolicy, *, devices: Sequence[str | int] | None,
                groups: Sequence[int] | None) -> int:
    """Scope the policy to more devices and groups (already targeted ones are skipped); 422 for unknown ones."""
    device_ids, group_ids = resolve_targets(session, devices, groups)
    have = session.execute(select(CompliancePolicyTarget.device_id, CompliancePolicyTarget.group_id)
                           .where(CompliancePolicyTarget.policy_id == policy.id)).all()
    have_devices = {r.device_id for r in have if r.device_id is not None}
    have_groups = {r.group_id for r in have if r.group_id is not None}
    rows = [{"policy_id": policy.id, "device_id": d, "group_id": None} for d in device_ids if d not in have_devices]
    rows += [{"policy_id": policy.id, "device_id": None, "group_id": g} for g in group_ids if g not in have_groups]
    if rows:
        session.execute(insert(CompliancePolicyTarget), rows)
    record_event(session, "compliance_policy:target", "compliance_policies", policy.id,
                 {"devices": len(device_ids), "groups": group_ids, "new": len(rows)})
    return len(rows)


def remove_targets(session: Session, policy: CompliancePolicy, *, devices: Sequence[str | int] | None,
                   groups: Sequence[int] | None) -> int:
    device_ids, group_ids = resolve_targets(session, devices, groups)
    clauses = []
    if device_ids:
        clauses.append(in_values(session, CompliancePolicyTarget.device_id, device_ids, integer=True))
    if group_ids:
        clauses.append(CompliancePolicyTarget.group_id.in_(group_ids))
    removed = 0
    if clauses:
        removed = session.execute(delete(CompliancePolicyTarget).where(
            CompliancePolicyTarget.policy_id == policy.id, or_(*clauses))).rowcount or 0
    record_event(session, "compliance_policy:untarget", "compliance_policies", policy.id,
                 {"devices": len(device_ids), "groups": group_ids, "removed": removed})
    return removed


# --- evaluation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """A device's overall state changed (``from_state`` None: its first evaluation)."""

    device_id: int
    from_state: str | None
    to_state: str


def _scopes(session: Session, policies: Sequence[CompliancePolicy]) -> dict[int, ColumnElement[bool]]:
    """policy id → SQL on ``devices``: the policy applies to the device (one SELECT for the groups, then
    one per distinct targeted group for its membership)."""
    groups: dict[int, list[int]] = {}
    ids = [p.id for p in policies if not p.all_devices]
    if ids:
        for policy_id, group_id in session.execute(
            select(CompliancePolicyTarget.policy_id, CompliancePolicyTarget.group_id)
            .where(CompliancePolicyTarget.policy_id.in_(ids), CompliancePolicyTarget.group_id.is_not(None))
        ):
            groups.setdefault(policy_id, []).append(group_id)
    memberships: dict[int, ColumnElement[bool]] = {}
    scopes: dict[int, ColumnElement[bool]] = {}
    for policy in policies:
        if policy.all_devices:
            scopes[policy.id] = true()
            continue
        clauses: list[ColumnElement[bool]] = [Device.id.in_(
            select(CompliancePolicyTarget.device_id)
            .where(CompliancePolicyTarget.policy_id == policy.id, CompliancePolicyTarget.device_id.is_not(None)))]
        for group_id in groups.get(policy.id, ()):
            if group_id not in memberships:
                try:
                    memberships[group_id] = group_condition(session, group_id)
                except ValueError:  # a smart group whose filter refers to itself: it has no members
                    memberships[group_id] = false()
            clauses.append(memberships[group_id])
        scopes[policy.id] = or_(*clauses)
    return scopes


def _time_literal(session: Session, value: datetime | None) -> ColumnElement[datetime | None]:
    """A time (or NULL) as a column of a UNION: typed on PostgreSQL; on SQLite a CAST would turn the
    stored text into a number, so the bound text is left as it is."""
    bound = literal(value, UTCDateTime())
    return cast(bound, UTCDateTime()) if dialect_name(session) == "postgresql" else bound


def _computed(session: Session, policies: Sequence[CompliancePolicy], subset: ColumnElement[bool], now: datetime):
    """One ``UNION ALL`` of every policy's (device_id, policy_id, status, observed, remediate_after)."""
    scopes = _scopes(session, policies)
    selects = []
    for policy in policies:
        rule = RULES[policy.rule](session, policy.parameters or {}, now)
        status = case((~rule.known, UNKNOWN), (rule.holds, COMPLIANT), else_=NON_COMPLIANT)
        due = now + timedelta(minutes=policy.grace_minutes or 0) if policy.remediation else None
        selects.append(
            select(
                Device.id.label("device_id"),
                literal(policy.id, Integer).label("policy_id"),
                cast(status, String).label("status"),
                cast(rule.observed, String).label("observed"),
                _time_literal(session, due).label("remediate_after"),
            )
            .select_from(Device)
            .outerjoin(DeviceSecurityInfo, DeviceSecurityInfo.device_id == Device.id)
            .where(subset, scopes[policy.id], rule.applies)
        )
    if not selects:
        selects.append(select(
            literal(0, Integer).label("device_id"), literal(0, Integer).label("policy_id"),
            cast(literal(UNKNOWN), String).label("status"), cast(null(), String).label("observed"),
            _time_literal(session, None).label("remediate_after"),
        ).where(false()))
    return (union_all(*selects) if len(selects) > 1 else selects[0]).subquery("computed")


def evaluate(session: Session, device_ids: Sequence[int] | None = None, *, now: datetime | None = None) -> list[Transition]:
    """Evaluate every enabled policy for every device (or for ``device_ids``); returns the devices whose
    overall state changed. A constant number of statements whatever the number of devices."""
    now = now or utcnow()
    at = literal(now, UTCDateTime())
    if device_ids is None:
        subset: ColumnElement[bool] = true()
        result_subset: ColumnElement[bool] = true()
    else:
        if not device_ids:
            return []
        subset = in_values(session, Device.id, device_ids, integer=True)
        result_subset = in_values(session, DevicePolicyResult.device_id, device_ids, integer=True)
    policies = list(session.scalars(select(CompliancePolicy).where(CompliancePolicy.enabled.is_(True))
                                    .order_by(CompliancePolicy.id)))
    if not policies and device_ids is not None:
        # a device's new inventory cannot change anything without a policy (the connect path pays one
        # statement); a full run still settles every device, so deleting the last policy clears the states
        return []
    if dialect_name(session) == "postgresql":
        lock = func.pg_advisory_xact_lock if device_ids is None else func.pg_advisory_xact_lock_shared
        session.execute(select(lock(EVALUATION_LOCK)))
    computed = _computed(session, policies, subset, now)
    result = DevicePolicyResult
    same_row = and_(result.device_id == computed.c.device_id, result.policy_id == computed.c.policy_id)
    violated = computed.c.status == NON_COMPLIANT
    changed = result.status.is_distinct_from(computed.c.status)
    session.execute(
        update(result)
        .where(same_row, or_(changed, result.observed.is_distinct_from(computed.c.observed)))
        .values(
            status=computed.c.status,
            observed=computed.c.observed,
            changed_at=case((changed, at), else_=result.changed_at),
            violated_at=case((~violated, null()), (changed, at), else_=result.violated_at),
            remediate_after=case((~violated, null()), (changed, computed.c.remediate_after),
                                 else_=result.remediate_after),
            remediated_at=case((changed, null()), else_=result.remediated_at),
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(_insert_new(session, result).from_select(
        ["device_id", "policy_id", "status", "observed", "changed_at", "violated_at", "remediate_after"],
        select(computed.c.device_id, computed.c.policy_id, computed.c.status, computed.c.observed, at,
               case((violated, at), else_=null()), case((violated, computed.c.remediate_after), else_=null()))
        .where(~exists().where(same_row)),
    ))
    session.execute(
        delete(result)
        .where(result_subset, ~exists().where(same_row))
        .execution_options(synchronize_session=False)
    )
    return _write_states(session, subset, now)


def _insert_new(session: Session, model: Any):
    """``INSERT … ON CONFLICT DO NOTHING``: two evaluations of one device that raced past the lock (two
    answers of the same device at once) leave one row, never an integrity error on a device request."""
    build = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
    return build(model).on_conflict_do_nothing()


def _write_states(session: Session, subset: ColumnElement[bool], now: datetime) -> list[Transition]:
    """Each device's overall state from its results: history for the changes, then ``device_compliance``."""
    result, state_row = DevicePolicyResult, DeviceCompliance
    at = literal(now, UTCDateTime())
    violations = func.coalesce(func.sum(case((result.status == NON_COMPLIANT, 1), else_=0)), 0)
    unknowns = func.coalesce(func.sum(case((result.status == UNKNOWN, 1), else_=0)), 0)
    states = (
        select(
            Device.id.label("device_id"),
            cast(case((violations > 0, NON_COMPLIANT), (unknowns > 0, UNKNOWN), else_=COMPLIANT), String)
            .label("state"),
            cast(violations, Integer).label("violations"),
        )
        .select_from(Device)
        .outerjoin(result, result.device_id == Device.id)
        .where(subset)
        .group_by(Device.id)
        .subquery("states")
    )
    rows = session.execute(
        insert(ComplianceHistory)
        .from_select(
            ["device_id", "from_state", "to_state", "violation_count", "changed_at"],
            select(states.c.device_id, state_row.state, states.c.state, states.c.violations, at)
            .select_from(states.outerjoin(state_row, state_row.device_id == states.c.device_id))
            .where(state_row.state.is_distinct_from(states.c.state)),
        )
        .returning(ComplianceHistory.device_id, ComplianceHistory.from_state, ComplianceHistory.to_state)
    ).all()
    same = state_row.device_id == states.c.device_id
    session.execute(
        update(state_row)
        .where(same, or_(state_row.state.is_distinct_from(states.c.state),
                         state_row.violation_count.is_distinct_from(states.c.violations)))
        .values(state=states.c.state, violation_count=states.c.violations,
                changed_at=case((state_row.state.is_distinct_from(states.c.state), at), else_=state_row.changed_at))
        .execution_options(synchronize_session=False)
    )
    session.execute(_insert_new(session, state_row).from_select(
        ["device_id", "state", "violation_count", "changed_at"],
        select(states.c.device_id, states.c.state, states.c.violations, at).where(~exists().where(same)),
    ))
    return sorted((Transition(r.device_id, r.from_state, r.to_state) for r in rows), key=lambda t: t.device_id)


# --- remediation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    policy_id: int
    device_ids: list[int]


def claim_remediations(session: Session, *, now: datetime | None = None) -> list[Claim]:
    """Claim every remediation that is due (non-compliant past its grace period, not claimed since the
    transition): one ``UPDATE … RETURNING``. A result is claimed once per transition to non_compliant;
    two workers racing on PostgreSQL each claim a disjoint set (the second waits on the row lock, then
    sees ``remediated_at`` set and skips the row)."""
    now = now or utcnow()
    result = DevicePolicyResult
    rows = session.execute(
        update(result)
        .where(result.status == NON_COMPLIANT, result.remediated_at.is_(None),
               result.remediate_after.is_not(None), result.remediate_after <= now)
        .values(remediated_at=now)
        .returning(result.policy_id, result.device_id)
        .execution_options(synchronize_session=False)
    ).all()
    by_policy: dict[int, list[int]] = {}
    for policy_id, device_id in rows:
        by_policy.setdefault(policy_id, []).append(device_id)
    return [Claim(policy_id, sorted(ids)) for policy_id, ids in sorted(by_policy.items())]


# --- reading back ---------------------------------------------------------------------------------


def device_state(session: Session, device_id: int) -> DeviceCompliance | None:
    return session.get(DeviceCompliance, device_id)


def device_results(session: Session, device_id: int) -> list[tuple[DevicePolicyResult, CompliancePolicy]]:
    """The device's result for each policy that applies to it, with the policy, in policy order."""
    return [(r, p) for r, p in session.execute(
        select(DevicePolicyResult, CompliancePolicy)
        .join(CompliancePolicy, CompliancePolicy.id == DevicePolicyResult.policy_id)
        .where(DevicePolicyResult.device_id == device_id)
        .order_by(CompliancePolicy.id)
    ).all()]


def history_query(device_id: int):
    return select(ComplianceHistory).where(ComplianceHistory.device_id == device_id)


def policy_counts(session: Session, policy_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """policy id → devices per status (one GROUP BY)."""
    out: dict[int, dict[str, int]] = {pid: {COMPLIANT: 0, NON_COMPLIANT: 0, UNKNOWN: 0} for pid in policy_ids}
    if not policy_ids:
        return out
    for policy_id, status, count in session.execute(
        select(DevicePolicyResult.policy_id, DevicePolicyResult.status, func.count())
        .where(DevicePolicyResult.policy_id.in_(list(policy_ids)))
        .group_by(DevicePolicyResult.policy_id, DevicePolicyResult.status)
    ):
        out[policy_id][status] = count
    return out


def states_of(session: Session, device_ids: Sequence[int]) -> dict[int, DeviceCompliance]:
    """device id → its compliance row, for one page of devices (one query; never evaluated: absent)."""
    ids = list(device_ids)
    if not ids:
        return {}
    return {row.device_id: row for row in session.scalars(
        select(DeviceCompliance).where(in_values(session, DeviceCompliance.device_id, ids, integer=True)))}


def security_of(session: Session, device_id: int) -> DeviceSecurityInfo | None:
    return session.get(DeviceSecurityInfo, device_id)
