"""The app catalogue's resources and bodies."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from mdmserver.api.apidoc import ApiDoc, Body, Reply, listing
from mdmserver.api.jsonapi import resource
from mdmserver.apps.links import manifest_url, package_url
from mdmserver.apps.models import App, AppSource
from mdmserver.db import isoformat
from mdmserver.records.devices import Platform

TYPE = "apps"
#: The platforms a catalogue entry is for: iOS (iPadOS devices install iOS apps) and macOS.
CATALOGUE_PLATFORMS = (Platform.IOS.value, Platform.MACOS.value)
MAX_STORE_ID = 2**63 - 1


def _text(limit: int, **kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=limit), **kwargs)


class AppUpdateSchema(Schema):
    """What may be changed by hand: any entry's ``name``; an App Store entry's identifiers and versions
    (an uploaded app's come from its package)."""

    class Meta:
        unknown = RAISE

    name = _text(255)
    bundle_id = _text(255, allow_none=True)
    itunes_store_id = fields.Integer(strict=True, allow_none=True,
                                     validate=validate.Range(min=1, max=MAX_STORE_ID))
    version = _text(64, allow_none=True)
    minimum_os = _text(32, allow_none=True)


class AppCreateSchema(AppUpdateSchema):
    """An App Store app: its platform, its ``itunes_store_id`` and/or ``bundle_id``, its name."""

    platform = fields.String(required=True, validate=validate.OneOf(CATALOGUE_PLATFORMS))
    name = _text(255, required=True)

    @validates_schema
    def _identified(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("bundle_id") is None and data.get("itunes_store_id") is None:
            raise ValidationError("an App Store app needs an itunes_store_id or a bundle_id")


class PackageUploadSchema(Schema):
    """The package upload as a multipart form: the .ipa or .pkg in the field ``file`` (or send the file
    itself as ``application/octet-stream`` with ``?filename=``)."""

    file = fields.Raw(required=True, metadata={"type": "string", "format": "binary"})


def app_resource(app: App, public_url: str) -> dict[str, Any]:
    """An entry as the admin API shows it. An enterprise entry shows the URLs devices download it from:
    they carry its download token, a capability to fetch the package (not secret material: the package
    is what every assigned device receives), so any ``read`` token sees them."""
    attributes: dict[str, Any] = {
        "source": app.source,
        "platform": app.platform,
        "bundle_id": app.bundle_id,
        "itunes_store_id": app.itunes_store_id,
        "name": app.name,
        "version": app.version,
        "build_version": app.build_version,
        "minimum_os": app.minimum_os,
        "revision": app.revision,
        "package_kind": app.package_kind,
        "package_name": app.package_name,
        "package_size": app.package_size,
        "package_sha256": app.package_sha256,
        "manifest_url": None,
        "package_url": None,
        "created_by": app.created_by,
        "created_at": isoformat(app.created_at),
        "updated_at": isoformat(app.updated_at),
    }
    if app.source == AppSource.ENTERPRISE and app.package_sha256 and app.package_kind:
        attributes["manifest_url"] = manifest_url(public_url, app.download_token)
        attributes["package_url"] = package_url(public_url, app.download_token, app.package_sha256,
                                                app.package_kind)
    return resource(TYPE, app.id, attributes, links={"self": f"/api/v1/apps/{app.id}"})


OPENAPI: dict[str, ApiDoc] = {
    "apps.list_apps": listing(TYPE, filters=("platform", "source", "bundle_id", "itunes_store_id"),
                              sorts=("id", "name", "bundle_id", "platform", "created_at", "updated_at")),
    "apps.create_app": ApiDoc(body=AppCreateSchema, type=TYPE, status=201, errors=(409,)),
    "apps.upload_package": ApiDoc(body=PackageUploadSchema, body_kind=Body.MULTIPART, type=TYPE, status=201,
                                  errors=(409, 413, 415, 422),
                                  query={"filename": "the file's name (application/octet-stream uploads)"}),
    "apps.get_app": ApiDoc(type=TYPE),
    "apps.update_app": ApiDoc(body=AppUpdateSchema, type=TYPE, errors=(409,)),
    "apps.delete_app": ApiDoc(type=TYPE, reply=Reply.EMPTY, errors=(409,)),
    "app_downloads.manifest": ApiDoc(reply=Reply.PLIST),
    "app_downloads.package": ApiDoc(reply=Reply.FILE),
}
