"""The app catalogue: the one writer of ``apps``.

App Store entries are created from their identifiers; enterprise entries from an uploaded package, whose
facts (bundle id, versions, name, minimum OS, platform, kind) are read from the package itself. The
package store is a collaborator (``mdmserver.collaborators.package_store``); files a committed change no
longer references are released by the caller after its commit (:func:`release_packages`), so a rolled-back
change never loses the file its row still names.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, BinaryIO

from sqlalchemy import Select, column, exists, or_, select, table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mdmserver.apps.models import App, AppSource, PackageKind
from mdmserver.apps.packages import PackageError, PackageFacts, read_package
from mdmserver.apps.storage import PackageStore, StagedPackage
from mdmserver.audit.service import record_event
from mdmserver.db import utcnow
from mdmserver.errors import Conflict, NotFound, UnprocessableEntity

POINTER = "/data/attributes"
#: The assignments table, read (never written) to refuse deleting an assigned app. Named here rather than
#: imported: ``app_assignments`` builds on the catalogue, so importing its model would close a package cycle.
_ASSIGNMENTS = table("app_assignments", column("app_id"))
#: the blueprints' apps, read for the same reason (``blueprints`` builds on the catalogue too)
_BLUEPRINT_APPS = table("blueprint_apps", column("app_id"))

#: Attributes of an enterprise entry that come from its package and cannot be changed by hand.
PACKAGE_FACTS = ("bundle_id", "version", "minimum_os")


class UploadOutcome(StrEnum):
    CREATED = "created"  # a new catalogue entry (201)
    UNCHANGED = "unchanged"  # the entry's current package, uploaded again (200)
    REPLACED = "replaced"  # a new package for an existing entry: revision + 1 (200)


@dataclass(frozen=True)
class Upload:
    app: App
    outcome: UploadOutcome
    released: tuple[str, ...] = ()  # packages no longer current: pass to release_packages after the commit


def apps_query() -> Select:
    return select(App)


def get_app(session: Session, app_id: int) -> App:
    app = session.get(App, app_id)
    if app is None:
        raise NotFound(f"no app {app_id}")
    return app


def _new_token() -> str:
    return secrets.token_urlsafe(32)


def _check_unique(session: Session, platform: str, values: dict[str, Any], app: App | None) -> None:
    for key in ("bundle_id", "itunes_store_id"):
        value = values.get(key)
        if value is None:
            continue
        existing = session.scalar(select(App.id).where(App.platform == platform, getattr(App, key) == value))
        if existing is not None and (app is None or existing != app.id):
            raise Conflict(f"an app with this {key} exists for {platform} (id {existing})",
                           code="app_exists", pointer=f"{POINTER}/{key}")


@contextmanager
def _unique(session: Session, what: str) -> Iterator[None]:
    """Make the changes in a savepoint and flush them: when a concurrent request stored the same
    identifier first, the unique constraint refuses ours → 409 (not 500), and the session stays usable."""
    try:
        with session.begin_nested():
            yield
            session.flush()
    except IntegrityError:
        raise Conflict(f"another app with this {what} was stored at the same time; retry", code="app_exists") from None


def create_store_app(session: Session, values: dict[str, Any], *, actor: str | None = None) -> App:
    """A catalogue entry for an App Store app (``platform``, ``itunes_store_id`` and/or ``bundle_id``,
    ``name``); 409 when the platform already has an entry with the same identifier."""
    _check_unique(session, values["platform"], values, None)
    app = App(source=AppSource.STORE, download_token=_new_token(), revision=1, created_by=actor, **values)
    with _unique(session, "identifier"):
        session.add(app)
    record_event(session, "app:create", "apps", app.id,
                 {"source": app.source, "platform": app.platform, "bundle_id": app.bundle_id,
                  "itunes_store_id": app.itunes_store_id})
    return app


def update_app(session: Session, app: App, values: dict[str, Any]) -> App:
    """Change an entry's name (any entry) or its identifiers and versions (App Store entries: an
    enterprise entry's come from its package)."""
    if app.source == AppSource.ENTERPRISE:
        fixed = [key for key in values if key in (*PACKAGE_FACTS, "itunes_store_id")]
        if fixed:
            raise UnprocessableEntity(
                f"{fixed[0]} of an uploaded app comes from its package: upload a new package to change it",
                code="read_only", pointer=f"{POINTER}/{fixed[0]}")
    merged = {"bundle_id": app.bundle_id, "itunes_store_id": app.itunes_store_id, **values}
    if merged["bundle_id"] is None and merged["itunes_store_id"] is None:
        raise UnprocessableEntity("an App Store app needs an itunes_store_id or a bundle_id", pointer=POINTER)
    _check_unique(session, app.platform, values, app)
    with _unique(session, "identifier"):
        for key, value in values.items():
            setattr(app, key, value)
        app.updated_at = utcnow()
    record_event(session, "app:update", "apps", app.id, dict(values))
    return app


def is_assigned(session: Session, app: App) -> bool:
    """Assigned to a device or a group, or held by a blueprint."""
    return bool(session.scalar(select(or_(exists().where(_ASSIGNMENTS.c.app_id == app.id),
                                          exists().where(_BLUEPRINT_APPS.c.app_id == app.id)))))


def delete_app(session: Session, app: App) -> tuple[str, ...]:
    """Delete an entry that is assigned nowhere (409 ``app_assigned`` otherwise). Answers the packages
    to release after the commit."""
    if is_assigned(session, app):
        raise Conflict("the app is assigned to devices or groups, or in a blueprint: remove it from them first",
                       code="app_assigned")
    record_event(session, "app:delete", "apps", app.id,
                 {"platform": app.platform, "bundle_id": app.bundle_id, "package_sha256": app.package_sha256})
    released = (app.package_sha256,) if app.package_sha256 else ()
    session.delete(app)
    session.flush()
    return released


def upload_package(
    session: Session, store: PackageStore, stream: BinaryIO, *, filename: str | None, max_bytes: int,
    actor: str | None = None,
) -> Upload:
    """Store an uploaded package and create or update its catalogue entry (see :class:`UploadOutcome`).

    The stream is written to the store's staging area while hashed (``PackageTooLarge`` past
    ``max_bytes``), read there (``PackageError``), then kept under its SHA-256.
    """
    staged = store.stage(stream, max_bytes=max_bytes)
    try:
        with staged.open() as file:
            facts = read_package(file, staged.size)
        _check_filename(filename, facts)
        upload = _catalogue(session, staged, facts, filename, actor)
    except BaseException:
        store.discard(staged)
        raise
    store.commit(staged)
    return upload


def _check_filename(filename: str | None, facts: PackageFacts) -> None:
    if not filename:
        return
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension in tuple(PackageKind) and extension != facts.kind:
        raise PackageError(f"the file is named .{extension} but is a .{facts.kind} package")


def _catalogue(session: Session, staged: StagedPackage, facts: PackageFacts, filename: str | None,
               actor: str | None) -> Upload:
    app = session.scalar(select(App).where(App.platform == facts.platform, App.bundle_id == facts.bundle_id))
    if app is not None and app.source != AppSource.ENTERPRISE:
        raise Conflict(f"{facts.bundle_id} is in the catalogue as an App Store app (id {app.id}) for "
                       f"{facts.platform}: delete that entry to host the app here", code="app_exists")
    if app is not None and app.package_sha256 == staged.sha256:
        return Upload(app, UploadOutcome.UNCHANGED)
    package = {
        "version": facts.version,
        "build_version": facts.build_version,
        "minimum_os": facts.minimum_os,
        "package_kind": PackageKind(facts.kind),
        "package_sha256": staged.sha256,
        "package_size": staged.size,
        "package_name": (filename or f"{staged.sha256}.{facts.kind}")[:255],
        "package_chunks": {"size": staged.chunk_size, "sha256s": list(staged.chunk_sha256s)},
    }
    details = {"bundle_id": facts.bundle_id, "platform": facts.platform, "version": facts.version,
               "build_version": facts.build_version, "package_sha256": staged.sha256, "package_size": staged.size}
    if app is None:
        app = App(source=AppSource.ENTERPRISE, platform=facts.platform, bundle_id=facts.bundle_id,
                  name=facts.name, download_token=_new_token(), revision=1, created_by=actor, **package)
        with _unique(session, "bundle id"):
            session.add(app)
        record_event(session, "app:upload", "apps", app.id, details)
        return Upload(app, UploadOutcome.CREATED)
    previous = app.package_sha256
    for key, value in package.items():
        setattr(app, key, value)
    app.revision = App.revision + 1  # in SQL: two concurrent replacements count twice
    app.updated_at = utcnow()
    session.flush()
    record_event(session, "app:package:replace", "apps", app.id,
                 {**details, "revision": app.revision, "previous_sha256": previous})
    return Upload(app, UploadOutcome.REPLACED, (previous,) if previous else ())


def release_packages(session: Session, store: PackageStore, sha256s: Iterable[str]) -> None:
    """Remove stored packages that no catalogue entry names any more (call after the commit)."""
    for sha256 in set(sha256s):
        if session.scalar(select(exists().where(App.package_sha256 == sha256))):
            continue
        store.delete(sha256)


# --- device-facing downloads --------------------------------------------------------------------------


def downloadable_app(session: Session, download_token: str) -> App:
    """The enterprise app whose download token this is (an indexed lookup on the unique token); 404 for
    an unknown token or an App Store entry."""
    app = session.scalar(select(App).where(App.download_token == download_token))
    if app is None or app.package_sha256 is None:
        raise NotFound("no such app download")
    return app


def current_package(session: Session, download_token: str, sha256: str, kind: str) -> App:
    """The app whose current package is ``<sha256>.<kind>``; 404 for any other (an earlier package)."""
    app = downloadable_app(session, download_token)
    if app.package_sha256 != sha256 or app.package_kind != kind:
        raise NotFound("no such app download")
    return app
