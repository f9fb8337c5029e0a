"""The catalogue API: uploads, App Store entries, list/get/patch/delete, and the device-facing downloads.

Expected hashes and URLs are computed here from the bytes the test uploads, never read from the product.
"""

from __future__ import annotations

import hashlib
import io
import json
import plistlib
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from mdmserver.app_assignments.models import AppAssignment
from mdmserver.apps.models import App
from mdmserver.audit.models import AuditEvent
from tests.apps.builders import (
    chunk_sha256s,
    distribution,
    info_plist,
    make_ipa,
    make_product_pkg,
)
from tests.factories import make_device

JSONAPI = "application/vnd.api+json"
PUBLIC = "http://127.0.0.1:8080"
UPLOAD = "/api/v1/apps/packages"


@pytest.fixture
def h(auth):
    return auth("read", "write")


def upload(client, headers, data: bytes, filename: str | None = "Notes.ipa"):
    url = UPLOAD if filename is None else f"{UPLOAD}?filename={filename}"
    return client.post(url, data=data, headers={**headers, "Content-Type": "application/octet-stream"})


def stored(app, sha256: str) -> Path:
    return Path(app.config["DATA_DIR"]) / "apps" / sha256[:2] / sha256


def ipa(bundle_id: str, version: str = "1.0", build: str = "1", **kwargs) -> bytes:
    return make_ipa(info_plist(bundle_id, version, build, "Notes", "16.0"), **kwargs)


def assert_error(response, status: int, text: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["meta"]["request_id"] == response.headers["X-Request-ID"]
    assert text in body["errors"][0]["detail"], body
    return body["errors"][0]


# --- upload -------------------------------------------------------------------------------------------


def test_uploading_an_ipa_creates_an_enterprise_entry(app, client, h):
    data = ipa("com.example.upload", "1.4", "140")
    response = upload(client, h, data)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    attributes = body["data"]["attributes"]
    sha256 = hashlib.sha256(data).hexdigest()
    assert body["meta"]["outcome"] == "created"
    assert response.headers["Location"] == f"/api/v1/apps/{body['data']['id']}"
    assert {k: attributes[k] for k in ("source", "platform", "bundle_id", "name", "version", "build_version",
                                        "minimum_os", "package_kind", "package_sha256", "package_size",
                                        "package_name", "revision", "itunes_store_id")} == {
        "source": "enterprise", "platform": "ios", "bundle_id": "com.example.upload", "name": "Notes",
        "version": "1.4", "build_version": "140", "minimum_os": "16.0", "package_kind": "ipa",
        "package_sha256": sha256, "package_size": len(data), "package_name": "Notes.ipa", "revision": 1,
        "itunes_store_id": None}
    assert re.fullmatch(rf"{PUBLIC}/apps/[A-Za-z0-9_-]{{40,64}}/manifest\.plist", attributes["manifest_url"])
    assert stored(app, sha256).read_bytes() == data


def test_uploading_a_pkg_as_multipart(app, client, h):
    data = make_product_pkg(distribution("com.example.multipart", "5.0", "Multipart Tool", "13.0"))
    response = client.post(UPLOAD, data={"file": (io.BytesIO(data), "Tool.pkg")}, headers=h,
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    attributes = response.get_json()["data"]["attributes"]
    assert (attributes["platform"], attributes["package_kind"], attributes["bundle_id"], attributes["name"],
            attributes["version"], attributes["minimum_os"], attributes["package_name"]) == \
        ("macos", "pkg", "com.example.multipart", "Multipart Tool", "5.0", "13.0", "Tool.pkg")
    assert stored(app, hashlib.sha256(data).hexdigest()).exists()


def test_the_same_bytes_twice_are_the_same_entry(client, h, db_session):
    data = ipa("com.example.twice")
    first = upload(client, h, data)
    second = upload(client, h, data)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.get_json()["meta"]["outcome"] == "unchanged"
    assert second.get_json()["data"]["id"] == first.get_json()["data"]["id"]
    assert second.get_json()["data"]["attributes"]["revision"] == 1
    count = db_session.scalars(select(App).where(App.bundle_id == "com.example.twice")).all()
    assert len(count) == 1


def test_a_new_build_replaces_the_package_and_bumps_the_revision(app, client, h):
    old, new = ipa("com.example.update", "1.0", "1"), ipa("com.example.update", "1.1", "2")
    first = upload(client, h, old).get_json()["data"]
    token_url = first["attributes"]["manifest_url"]
    response = upload(client, h, new, "Notes-1.1.ipa")
    assert response.status_code == 200
    body = response.get_json()
    attributes = body["data"]["attributes"]
    assert body["meta"]["outcome"] == "replaced"
    assert body["data"]["id"] == first["id"]
    assert (attributes["revision"], attributes["version"], attributes["build_version"]) == (2, "1.1", "2")
    assert attributes["package_sha256"] == hashlib.sha256(new).hexdigest()
    assert attributes["manifest_url"] == token_url  # the capability does not change with a new build
    assert not stored(app, hashlib.sha256(old).hexdigest()).exists()
    assert stored(app, hashlib.sha256(new).hexdigest()).read_bytes() == new
    old_package = first["attributes"]["package_url"]
    assert client.get(old_package.removeprefix(PUBLIC)).status_code == 404
    assert client.get(attributes["package_url"].removeprefix(PUBLIC)).status_code == 200


def test_a_bundle_id_on_another_platform_is_its_own_entry(client, h):
    ios = upload(client, h, ipa("com.example.both")).get_json()["data"]
    mac = upload(client, h, make_product_pkg(distribution("com.example.both")), "Both.pkg").get_json()["data"]
    assert ios["id"] != mac["id"]
    assert (ios["attributes"]["platform"], mac["attributes"]["platform"]) == ("ios", "macos")


def test_an_upload_past_the_size_limit_is_413(app, client, h, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_APP_PACKAGE_SIZE", 1000)
    assert_error(upload(client, h, ipa("com.example.big", filler=b"z" * 2000)), 413, "limited to 1000 bytes")
    assert not list((Path(app.config["DATA_DIR"]) / "apps" / "incoming").glob("upload-*"))


def test_a_package_larger_than_other_admin_bodies_is_accepted(app, client, h, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_UPLOAD_BYTES", 1000)
    response = upload(client, h, ipa("com.example.larger", filler=b"l" * 5000))
    assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize(("data", "filename", "problem"), [
    (b"hello", "x.ipa", "not a zip archive (.ipa) nor a xar archive (.pkg)"),
    (make_ipa(plistlib.dumps({"CFBundleName": "x"})), "x.ipa", "has no CFBundleIdentifier"),
    (make_product_pkg(b"<other/>"), "x.pkg", "the root element is not <installer-gui-script>"),
    (make_ipa(), "Notes.pkg", "the file is named .pkg but is a .ipa package"),
])
def test_a_bad_package_is_422_naming_the_problem(app, client, h, data, filename, problem):
    error = assert_error(upload(client, h, data, filename), 422, problem)
    assert error["code"] == "invalid_package"
    assert not list((Path(app.config["DATA_DIR"]) / "apps" / "incoming").glob("upload-*"))


def test_the_upload_media_type_and_form_are_checked(client, h):
    assert_error(client.post(UPLOAD, json={"file": "x"}, headers=h), 415, "application/octet-stream")
    response = client.post(UPLOAD, data={"other": "x"}, headers=h, content_type="multipart/form-data")
    assert_error(response, 400, "the multipart field 'file' is missing")
    assert_error(client.post(f"{UPLOAD}?colour=red", data=b"x", headers={
        **h, "Content-Type": "application/octet-stream"}), 400, "unknown query parameter")


def test_a_read_token_cannot_upload_but_can_read(client, auth, h):
    data = ipa("com.example.scopes")
    read_only = auth("read")
    response = upload(client, read_only, data)
    assert response.status_code == 403
    assert response.get_json()["errors"][0]["code"] == "insufficient_scope"
    assert client.post(UPLOAD, data=data).status_code == 401
    created = upload(client, h, data).get_json()["data"]
    assert client.get(f"/api/v1/apps/{created['id']}", headers=read_only).status_code == 200
    for method in ("PATCH", "DELETE"):
        assert client.open(f"/api/v1/apps/{created['id']}", method=method, headers=read_only).status_code == 403


def test_uploads_are_audited_without_the_download_token(client, h, db_session):
    created = upload(client, h, ipa("com.example.audit")).get_json()["data"]
    token = created["attributes"]["manifest_url"].split("/")[-2]
    events = db_session.scalars(select(AuditEvent).where(AuditEvent.resource_type == "apps",
                                                         AuditEvent.resource_id == created["id"])).all()
    assert [e.action for e in events] == ["app:upload"]
    assert events[0].details["bundle_id"] == "com.example.audit"
    assert token not in json.dumps([e.details for e in events])


# --- App Store entries, list, get, patch, delete -------------------------------------------------------


def store_app(client, h, **attributes):
    body = {"data": {"type": "apps", "attributes": {"platform": "ios", "name": "Pages", **attributes}}}
    return client.post("/api/v1/apps", json=body, headers={**h, "Content-Type": JSONAPI})


def test_an_app_store_entry_is_created_and_duplicates_are_409(client, h):
    response = store_app(client, h, itunes_store_id=361309726, bundle_id="com.apple.Pages")
    assert response.status_code == 201, response.get_json()
    attributes = response.get_json()["data"]["attributes"]
    assert (attributes["source"], attributes["itunes_store_id"], attributes["manifest_url"],
            attributes["package_sha256"]) == ("store", 361309726, None, None)
    error = assert_error(store_app(client, h, itunes_store_id=361309726), 409, "itunes_store_id")
    assert error["source"]["pointer"] == "/data/attributes/itunes_store_id"
    assert_error(store_app(client, h, bundle_id="com.apple.Pages"), 409, "bundle_id")
    assert store_app(client, h, platform="macos", itunes_store_id=361309726).status_code == 201


@pytest.mark.parametrize(("attributes", "pointer"), [
    ({}, "/data/attributes"),
    ({"itunes_store_id": "12"}, "/data/attributes/itunes_store_id"),
    ({"itunes_store_id": 0}, "/data/attributes/itunes_store_id"),
    ({"bundle_id": "x", "platform": "android"}, "/data/attributes/platform"),
    ({"bundle_id": "x", "colour": "red"}, "/data/attributes/colour"),
    ({"bundle_id": "x" * 256}, "/data/attributes/bundle_id"),
])
def test_bad_app_store_entries_are_422(client, h, attributes, pointer):
    response = store_app(client, h, **attributes)
    assert response.status_code == 422, response.get_json()
    assert pointer in {e["source"]["pointer"] for e in response.get_json()["errors"]}


def test_uploading_a_bundle_that_is_an_app_store_entry_is_409(client, h):
    store_app(client, h, bundle_id="com.example.storeonly")
    assert_error(upload(client, h, ipa("com.example.storeonly")), 409, "as an App Store app")


def test_the_list_filters_sorts_and_pages(client, h):
    upload(client, h, ipa("com.example.list.a"))
    upload(client, h, make_product_pkg(distribution("com.example.list.b")), "b.pkg")
    store_app(client, h, bundle_id="com.example.list.c", itunes_store_id=42)
    r = client.get("/api/v1/apps?filter[source]=enterprise&sort=-bundle_id", headers=h).get_json()
    assert [a["attributes"]["bundle_id"] for a in r["data"]][:2] == ["com.example.list.b", "com.example.list.a"]
    r = client.get("/api/v1/apps?filter[platform]=macos", headers=h).get_json()
    assert {a["attributes"]["bundle_id"] for a in r["data"]} == {"com.example.list.b"}
    r = client.get("/api/v1/apps?filter[bundle_id]=com.example.list.c", headers=h).get_json()
    assert r["meta"]["total"] == 1 and r["data"][0]["attributes"]["itunes_store_id"] == 42
    r = client.get("/api/v1/apps?filter[itunes_store_id]=42", headers=h).get_json()
    assert r["meta"]["total"] == 1
    r = client.get("/api/v1/apps?page[size]=1", headers=h).get_json()
    assert r["meta"]["total"] == 3 and len(r["data"]) == 1 and r["links"]["next"]
    for query, parameter in (("filter[colour]=x", "filter[colour]"), ("filter[platform]=android", "filter[platform]"),
                             ("filter[itunes_store_id]=abc", "filter[itunes_store_id]"), ("sort=size", "sort")):
        error = assert_error(client.get(f"/api/v1/apps?{query}", headers=h), 400, "")
        assert error["source"]["parameter"] == parameter


def test_get_patch_and_errors(client, h):
    created = upload(client, h, ipa("com.example.patch")).get_json()["data"]
    url = f"/api/v1/apps/{created['id']}"
    headers = {**h, "Content-Type": JSONAPI}
    response = client.patch(url, json={"data": {"type": "apps", "id": created["id"], "attributes": {
        "name": "Renamed"}}}, headers=headers)
    assert response.status_code == 200 and response.get_json()["data"]["attributes"]["name"] == "Renamed"
    assert client.get(url, headers=h).get_json()["data"]["attributes"]["name"] == "Renamed"
    error = assert_error(client.patch(url, json={"data": {"type": "apps", "attributes": {"bundle_id": "x"}}},
                                      headers=headers), 422, "comes from its package")
    assert error["source"]["pointer"] == "/data/attributes/bundle_id"
    assert_error(client.patch(url, json={"data": {"type": "apps", "attributes": {"name": ""}}}, headers=headers),
                 422, "Length must be between 1 and 255")
    assert_error(client.get("/api/v1/apps/999999", headers=h), 404, "no app 999999")


def test_patching_an_app_store_entry(client, h):
    first = store_app(client, h, itunes_store_id=1001).get_json()["data"]
    store_app(client, h, itunes_store_id=1002)
    url, headers = f"/api/v1/apps/{first['id']}", {**h, "Content-Type": JSONAPI}
    response = client.patch(url, json={"data": {"type": "apps", "attributes": {
        "bundle_id": "com.example.store", "version": "3.2"}}}, headers=headers)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["data"]["attributes"]["version"] == "3.2"
    assert_error(client.patch(url, json={"data": {"type": "apps", "attributes": {"itunes_store_id": 1002}}},
                              headers=headers), 409, "itunes_store_id")
    assert_error(client.patch(url, json={"data": {"type": "apps", "attributes": {
        "itunes_store_id": None, "bundle_id": None}}}, headers=headers), 422, "needs an itunes_store_id or a bundle_id")


def test_delete_removes_the_entry_and_its_package(app, client, h):
    data = ipa("com.example.delete")
    created = upload(client, h, data).get_json()["data"]
    package = created["attributes"]["package_url"].removeprefix(PUBLIC)
    assert client.delete(f"/api/v1/apps/{created['id']}", headers=h).status_code == 204
    assert not stored(app, hashlib.sha256(data).hexdigest()).exists()
    assert client.get(f"/api/v1/apps/{created['id']}", headers=h).status_code == 404
    assert client.get(package).status_code == 404


def test_an_assigned_app_cannot_be_deleted(app, client, h, db_session):
    data = ipa("com.example.assigned")
    created = upload(client, h, data).get_json()["data"]
    device = make_device(db_session)
    db_session.add(AppAssignment(app_id=int(created["id"]), device_id=device.id))
    db_session.commit()
    error = assert_error(client.delete(f"/api/v1/apps/{created['id']}", headers=h), 409, "assigned")
    assert error["code"] == "app_assigned"
    assert stored(app, hashlib.sha256(data).hexdigest()).exists()


# --- device-facing downloads ---------------------------------------------------------------------------


def test_the_manifest_names_the_package_by_url_and_chunk_hashes(client, h):
    data = ipa("com.example.manifest", "2.0", "200", filler=bytes(range(256)) * (48 * 1024))  # ~12 MiB
    attributes = upload(client, h, data).get_json()["data"]["attributes"]
    token = attributes["manifest_url"].split("/")[-2]
    sha256 = hashlib.sha256(data).hexdigest()
    response = client.get(f"/apps/{token}/manifest.plist")  # no admin token
    assert response.status_code == 200
    assert response.mimetype in ("text/xml", "application/xml", "application/x-plist")
    manifest = plistlib.loads(response.data)
    chunks = chunk_sha256s(data)
    assert len(chunks) == 2
    assert manifest == {"items": [{
        "assets": [{"kind": "software-package", "url": f"{PUBLIC}/apps/{token}/{sha256}.ipa",
                    "sha256-size": 10 * 1024 * 1024, "sha256s": chunks}],
        "metadata": {"kind": "software", "title": "Notes", "bundle-identifier": "com.example.manifest",
                     "bundle-version": "2.0", "sizeInBytes": len(data)},
    }]}


def test_the_package_is_served_whole_by_range_and_conditionally(client, h):
    data = ipa("com.example.download", filler=b"0123456789" * 1000)
    attributes = upload(client, h, data).get_json()["data"]["attributes"]
    url = attributes["package_url"].removeprefix(PUBLIC)
    response = client.get(url)
    assert response.status_code == 200 and response.data == data
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["Accept-Ranges"] == "bytes"
    etag = response.headers["ETag"]
    assert etag.strip('"') == hashlib.sha256(data).hexdigest()
    partial = client.get(url, headers={"Range": "bytes=100-199"})
    assert partial.status_code == 206 and partial.data == data[100:200]
    assert partial.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.head(url).status_code == 200


def test_downloads_404_for_unknown_tokens_other_hashes_and_app_store_entries(client, h, db_session):
    data = ipa("com.example.notfound")
    attributes = upload(client, h, data).get_json()["data"]["attributes"]
    token = attributes["manifest_url"].split("/")[-2]
    sha256 = hashlib.sha256(data).hexdigest()
    store = store_app(client, h, itunes_store_id=777).get_json()["data"]
    store_token = db_session.get(App, int(store["id"])).download_token
    for path in (f"/apps/{'A' * 43}/manifest.plist", f"/apps/{'A' * 43}/{sha256}.ipa",
                 f"/apps/{token}/{'0' * 64}.ipa", f"/apps/{token}/{sha256}.pkg", f"/apps/{token}/{sha256}.zip",
                 f"/apps/{store_token}/manifest.plist", f"/apps/{token[:-1]}/manifest.plist"):
        assert_error(client.get(path), 404, "no such app download")


def test_one_apps_token_does_not_open_another_apps_package(client, h):
    """The token is the capability for its own entry only."""
    a = upload(client, h, ipa("com.example.token.a")).get_json()["data"]["attributes"]
    b = upload(client, h, ipa("com.example.token.b")).get_json()["data"]["attributes"]
    token_a = a["manifest_url"].split("/")[-2]
    assert_error(client.get(f"/apps/{token_a}/{b['package_sha256']}.ipa"), 404, "no such app download")
    assert client.get(f"/apps/{token_a}/{a['package_sha256']}.ipa").status_code == 200


def test_a_package_another_entry_still_names_is_kept(app, client, h, db_session):
    data = ipa("com.example.shared")
    created = upload(client, h, data).get_json()["data"]
    sha256 = hashlib.sha256(data).hexdigest()
    original = db_session.get(App, int(created["id"]))
    db_session.add(App(source="enterprise", platform="macos", bundle_id="com.example.shared.copy", name="Copy",
                       download_token="shared-copy-token", revision=1, package_kind="ipa", package_sha256=sha256,
                       package_size=original.package_size, package_chunks=original.package_chunks))
    db_session.commit()
    assert client.delete(f"/api/v1/apps/{created['id']}", headers=h).status_code == 204
    assert stored(app, sha256).exists()


def test_an_upload_without_a_file_name_is_named_by_its_hash(client, h):
    data = ipa("com.example.noname")
    response = upload(client, h, data, filename=None)
    assert response.status_code == 201
    assert response.get_json()["data"]["attributes"]["package_name"] == f"{hashlib.sha256(data).hexdigest()}.ipa"
