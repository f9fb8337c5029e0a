"""End to end over real HTTP: a browser-style multipart upload, the download, concurrent duplicates."""

from __future__ import annotations

import plistlib
from concurrent.futures import ThreadPoolExecutor

import httpx

from mdmserver.pki import cms

from .helpers import ASPEN, assert_same_plist, dumps, make_payload, make_profile


def test_upload_and_download_over_http(live_server):
    headers = {"Authorization": f"Bearer {live_server.token('read', 'write', 'secrets')}"}
    profile = make_profile([make_payload("com.apple.wifi.managed", SSID_STR="Live", AutoJoin=True)],
                           PayloadDisplayName="Live Wi-Fi")
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=30) as http:
        created = http.post("/api/v1/upload/profiles",
                            files={"file": ("live.mobileconfig", dumps(profile), "application/octet-stream")})
        assert created.status_code == 201, created.text
        assert created.headers["Content-Type"].startswith("application/vnd.api+json")
        assert created.headers["X-Request-ID"]
        profile_id = created.json()["data"]["id"]
        got = http.get(f"/api/v1/download/profiles/{profile_id}")
        assert got.status_code == 200 and got.headers["Content-Type"].startswith(ASPEN)
        assert got.headers["Content-Disposition"] == 'attachment; filename="Live-Wi-Fi.mobileconfig"'
        assert_same_plist(profile, plistlib.loads(got.content))
        signed = http.get(f"/api/v1/download/profiles/{profile_id}", params={"signed": "true"})
        assert_same_plist(profile, plistlib.loads(cms.unwrap_signed(signed.content).content))
        form = http.post("/api/v1/upload/profiles", data={"file": "x"})
        assert form.status_code == 415 and form.json()["meta"]["request_id"]


def test_concurrent_uploads_of_one_identifier_store_one_profile(live_server):
    headers = {"Authorization": f"Bearer {live_server.token('read', 'write')}"}
    data = dumps(make_profile([make_payload("com.example.a")], PayloadIdentifier="com.example.live.race"))

    def send(_):
        with httpx.Client(base_url=live_server.url, headers=headers, timeout=60) as http:
            return http.post("/api/v1/upload/profiles", files={"file": ("p.mobileconfig", data)}).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(send, range(6)))
    assert sorted(statuses) == [201] + [409] * 5, statuses
    with httpx.Client(base_url=live_server.url, headers=headers) as http:
        listing = http.get("/api/v1/profiles", params={"filter[identifier]": "com.example.live.race"}).json()
    assert listing["meta"]["total"] == 1
