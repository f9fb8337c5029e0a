"""``/api/v1/apps`` (the catalogue, package uploads) and the device-facing downloads under ``/apps``."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request, send_file

from mdmserver import workflows
from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import (
    document,
    jsonapi_response,
    list_document,
    load_attributes,
    paginate,
    parse_list_query,
    parse_resource_body,
    refuse_query_params,
)
from mdmserver.api.requests import body_limit
from mdmserver.apps import service
from mdmserver.apps.links import DOWNLOAD_PREFIX
from mdmserver.apps.manifests import app_manifest
from mdmserver.apps.models import App, AppSource
from mdmserver.apps.schemas import (
    CATALOGUE_PLATFORMS,
    TYPE,
    AppCreateSchema,
    AppUpdateSchema,
    app_resource,
)
from mdmserver.collaborators import package_store, public_url, secret_box
from mdmserver.db import db
from mdmserver.errors import BadRequest, NotFound, UnsupportedMediaType
from mdmserver.protocol.plist import dump_plist

log = logging.getLogger("mdmserver.apps")

bp = Blueprint("apps", __name__, url_prefix="/api/v1")
downloads = Blueprint("app_downloads", __name__, url_prefix=DOWNLOAD_PREFIX)
blueprints = [bp, downloads]

OCTET_STREAM = "application/octet-stream"
MULTIPART = "multipart/form-data"


def _one_of(allowed: tuple[str, ...], column):
    def build(value: str):
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return column == value

    return build


def _store_id(value: str):
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise ValueError("must be a number")
    return App.itunes_store_id == int(value)


@bp.get("/apps")
def list_apps():
    """The catalogue: App Store and uploaded apps. Filters ``platform``, ``source``, ``bundle_id``,
    ``itunes_store_id``; sort and paging as every JSON:API list."""
    query = parse_list_query(
        request.args,
        filters={
            "platform": _one_of(CATALOGUE_PLATFORMS, App.platform),
            "source": _one_of(tuple(AppSource), App.source),
            "bundle_id": lambda v: App.bundle_id == v,
            "itunes_store_id": _store_id,
        },
        sorts={"id": App.id, "name": App.name, "bundle_id": App.bundle_id, "platform": App.platform,
               "created_at": App.created_at, "updated_at": App.updated_at},
        default_sort=(App.id.asc(),),
    )
    page = paginate(db.session, service.apps_query(), query)
    base_url = public_url()
    return jsonapi_response(list_document(page, [app_resource(a, base_url) for a in page.items]))


@bp.post("/apps")
def create_app():
    """Add an App Store app: ``platform`` (ios or macos), ``itunes_store_id`` and/or ``bundle_id``,
    ``name``, optionally ``version``. 409 when the platform has an entry with the same identifier."""
    _, attributes = parse_resource_body(None, TYPE)
    values = load_attributes(AppCreateSchema(), attributes, "app")
    app = service.create_store_app(db.session, values, actor=current_actor())
    doc = document(app_resource(app, public_url()))
    db.session.commit()
    return jsonapi_response(doc, status=201, headers={"Location": f"/api/v1/apps/{app.id}"})


@bp.post("/apps/packages")
@body_limit("MAX_APP_PACKAGE_SIZE")
def upload_package():
    """Upload an enterprise app: an ``.ipa`` (iOS, iPadOS) or a ``.pkg`` (macOS).

    Send the file itself as ``application/octet-stream`` (``?filename=MyApp.ipa``), or as
    ``multipart/form-data`` in the field ``file``. The bundle id, versions, name, minimum OS, platform and
    kind are read from the package. 201: a new entry; 200: the same bytes again (``meta.outcome``
    ``unchanged``) or a new build of an uploaded bundle id (``replaced``: the package is replaced and
    ``revision`` goes up). 413 past ``max_app_package_size``; 422 for a package that cannot be read.
    """
    refuse_query_params(request.args, ("filename",))
    if request.mimetype not in (OCTET_STREAM, MULTIPART):
        raise UnsupportedMediaType(
            f"send the package as {OCTET_STREAM} (with ?filename=) or as {MULTIPART} in the field 'file', "
            f"not {request.mimetype or 'no Content-Type'}")
    actor = current_actor()
    # End the token lookup's transaction: no database lock is held while the package streams to disk.
    db.session.commit()
    if request.mimetype == MULTIPART:
        part = request.files.get("file")
        if part is None:
            raise BadRequest("the multipart field 'file' is missing", parameter="file")
        stream, filename = part.stream, part.filename
    else:
        stream, filename = request.stream, request.args.get("filename")
    store = package_store()
    upload = service.upload_package(db.session, store, stream, filename=filename,
                                    max_bytes=current_app.config["MAX_APP_PACKAGE_SIZE"], actor=actor)
    meta: dict = {"outcome": upload.outcome.value}
    if upload.outcome is service.UploadOutcome.REPLACED:
        # a new build: devices that have an older revision installed get the update
        meta["reconcile"] = workflows.app_revised(db.session, upload.app, actor=actor, box=secret_box(),
                                                  public_url=public_url())
    doc = document(app_resource(upload.app, public_url()), meta=meta)
    db.session.commit()
    service.release_packages(db.session, store, upload.released)
    created = upload.outcome is service.UploadOutcome.CREATED
    return jsonapi_response(doc, status=201 if created else 200,
                            headers={"Location": f"/api/v1/apps/{upload.app.id}"})


@bp.get("/apps/<int:app_id>")
def get_app(app_id: int):
    """One catalogue entry."""
    return jsonapi_response(document(app_resource(service.get_app(db.session, app_id), public_url())))


@bp.patch("/apps/<int:app_id>")
def update_app(app_id: int):
    """Rename an entry; change an App Store entry's identifiers or versions."""
    app = service.get_app(db.session, app_id)
    _, attributes = parse_resource_body(None, TYPE, require_id=app.id)
    app = service.update_app(db.session, app, load_attributes(AppUpdateSchema(), attributes, "app"))
    doc = document(app_resource(app, public_url()))
    db.session.commit()
    return jsonapi_response(doc)


@bp.delete("/apps/<int:app_id>")
def delete_app(app_id: int):
    """Delete an entry that is assigned nowhere (409 ``app_assigned`` otherwise), and its package file
    when no other entry uses it."""
    released = service.delete_app(db.session, service.get_app(db.session, app_id))
    db.session.commit()
    service.release_packages(db.session, package_store(), released)
    return jsonapi_response(None, status=204)


# --- device-facing downloads: the download token is the capability (see apps/links.py) ------------


@downloads.get("/<token>/manifest.plist")
def manifest(token: str):
    """The app manifest of an uploaded app's current package (iOS ``InstallApplication``'s
    ``ManifestURL``), an XML property list."""
    app = service.downloadable_app(db.session, token)
    return Response(dump_plist(app_manifest(app, public_url())), mimetype="text/xml")


@downloads.get("/<token>/<sha256>.<kind>")
def package(token: str, sha256: str, kind: str):
    """The current package of an uploaded app, named by its SHA-256; conditional and range requests
    are answered (ETag: the SHA-256)."""
    app = service.current_package(db.session, token, sha256, kind)
    try:
        file = package_store().open(sha256)
    except FileNotFoundError:
        log.error("app %s: package %s is missing from the store", app.id, sha256)
        raise NotFound("no such app download") from None
    response = send_file(file, mimetype=OCTET_STREAM, download_name=f"{sha256}.{kind}", conditional=False,
                         etag=False, last_modified=app.updated_at, max_age=None)
    response.content_length = app.package_size
    response.set_etag(sha256)
    return response.make_conditional(request, accept_ranges=True, complete_length=app.package_size)
