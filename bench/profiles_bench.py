#!/usr/bin/env python3
"""Profile benchmarks (issue 3).

1. Upload and download of a profile with 100 payloads through the HTTP API (Flask test client, real
   database): medians, and their ratio to ``plistlib.loads`` + ``plistlib.dumps`` of the same bytes
   measured in the same run (the floor: parsing and writing the plist, nothing else).
2. ``GET /api/v1/profiles`` pages of 50 with N profiles stored (default 10,000): median latency and
   the number of SQL statements per request.

Usage::

    .venv/bin/python bench/profiles_bench.py [--profiles 10000] [--repeat 21]
    MDMSERVER_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test .venv/bin/python bench/profiles_bench.py

SQLite by default (a temporary folder); PostgreSQL in a fresh schema (dropped at the end) when
``MDMSERVER_BENCH_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import plistlib
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdmserver.app import create_app  # noqa: E402
from mdmserver.bootstrap import initialize  # noqa: E402
from mdmserver.collaborators import secret_box  # noqa: E402
from mdmserver.db import db  # noqa: E402
from mdmserver.profiles import service  # noqa: E402
from mdmserver.tokens.service import create_token  # noqa: E402


def _payload(index: int) -> dict:
    """A realistic mix: typed payloads with nested values and data, and vendor preference domains."""
    base = {
        "PayloadIdentifier": f"com.example.bench.payload.{index}",
        "PayloadUUID": str(uuid.UUID(int=index)).upper(),
        "PayloadVersion": 1,
        "PayloadDisplayName": f"Payload {index}",
    }
    kind = index % 6
    if kind == 0:
        return {"PayloadType": "com.apple.wifi.managed", **base, "SSID_STR": f"Office {index}", "AutoJoin": True,
                "EncryptionType": "WPA2", "Password": "correct horse battery",
                "EAPClientConfiguration": {"AcceptEAPTypes": [13, 25], "TLSTrustedServerNames": ["radius.example.com"]}}
    if kind == 1:
        return {"PayloadType": "com.apple.mobiledevice.passwordpolicy", **base, "minLength": 8, "allowSimple": False,
                "maxPINAgeInDays": 90, "requireAlphanumeric": True}
    if kind == 2:
        return {"PayloadType": "com.apple.applicationaccess", **base, "allowCamera": False, "allowScreenShot": True,
                "ratingApps": 1000, "blacklistedAppBundleIDs": [f"com.example.app{i}" for i in range(5)]}
    if kind == 3:
        return {"PayloadType": "com.apple.security.root", **base, "PayloadCertificateFileName": "root.cer",
                "PayloadContent": secrets.token_bytes(1200)}
    if kind == 4:
        return {"PayloadType": "com.apple.ManagedClient.preferences", **base, "PayloadContent": {
            "com.microsoft.autoupdate2": {"Forced": [{"mcx_preference_settings": {
                "HowToCheck": "AutomaticDownload", "LastUpdate": datetime(2024, 1, 1), "Channel": "Current"}}]}}}
    return {"PayloadType": f"com.vendor.app{index}", **base, "Server": "https://vendor.example.com",
            "Interval": 3600, "Ratio": 0.75, "Tags": ["a", "b", "c"], "Nested": {"Level": {"Deeper": [1, 2, {"x": True}]}}}


def hundred_payload_profile(identifier: str) -> bytes:
    profile = {
        "PayloadContent": [_payload(i) for i in range(100)],
        "PayloadDisplayName": "Benchmark profile",
        "PayloadIdentifier": identifier,
        "PayloadType": "Configuration",
        "PayloadUUID": str(uuid.uuid4()).upper(),
        "PayloadVersion": 1,
    }
    return plistlib.dumps(profile, sort_keys=False)


def small_profile(index: int) -> dict:
    return {
        "PayloadContent": [
            {"PayloadType": "com.apple.wifi.managed", "PayloadIdentifier": f"bench.{index}.wifi",
             "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadVersion": 1, "SSID_STR": f"net{index}"},
            {"PayloadType": "com.vendor.settings", "PayloadIdentifier": f"bench.{index}.vendor",
             "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadVersion": 1, "Level": index},
        ],
        "PayloadDisplayName": f"Profile {index:05d}",
        "PayloadIdentifier": f"com.example.bench.list.{index:05d}",
        "PayloadType": "Configuration",
        "PayloadUUID": str(uuid.uuid4()).upper(),
        "PayloadVersion": 1,
    }


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


@contextmanager
def statement_counter(engine):
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def make_app(tmp: Path):
    pg = os.environ.get("MDMSERVER_BENCH_POSTGRES_URL")
    drop = None
    if pg:
        schema = f"bench_{secrets.token_hex(4)}"
        admin = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = f"{pg}{'&' if '?' in pg else '?'}options=-csearch_path%3D{schema}"

        def drop() -> None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    else:
        url = f"sqlite:///{tmp / 'bench.db'}"
    app = create_app(overrides={"data_dir": str(tmp / "data"), "database_url": url, "log_level": "WARNING"},
                     environ={})
    initialize(app)
    return app, ("postgresql" if pg else "sqlite"), drop


def _floor(data: bytes) -> float:
    start = time.perf_counter()
    plistlib.dumps(plistlib.loads(data), sort_keys=False)
    return time.perf_counter() - start


def bench_upload_download(engine, client, headers, repeat: int) -> dict:
    """Floor samples are interleaved with the measured requests, so both see the same machine load."""
    variants = [hundred_payload_profile(f"com.example.bench.big.{i}") for i in range(repeat)]
    size = len(variants[0])
    floor, uploads, ids = [], [], []
    for data in variants:
        floor.append(_floor(data))
        start = time.perf_counter()
        response = client.post("/api/v1/upload/profiles", headers=headers, content_type="multipart/form-data",
                               data={"file": (io.BytesIO(data), "bench.mobileconfig")})
        uploads.append(time.perf_counter() - start)
        assert response.status_code == 201, response.get_data(as_text=True)[:300]
        ids.append(response.get_json()["data"]["id"])
    downloads = []
    for profile_id, data in zip(ids, variants, strict=True):
        floor.append(_floor(data))
        start = time.perf_counter()
        response = client.get(f"/api/v1/download/profiles/{profile_id}", headers=headers)
        downloads.append(time.perf_counter() - start)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        assert plistlib.loads(response.data) == plistlib.loads(data), "the download differs from the upload"
    with statement_counter(engine) as statements:
        client.post("/api/v1/upload/profiles", headers=headers, content_type="multipart/form-data",
                    data={"file": (io.BytesIO(hundred_payload_profile("com.example.bench.count")), "b.mobileconfig")})
    upload_statements = len(statements)
    with statement_counter(engine) as statements:
        client.get(f"/api/v1/download/profiles/{ids[0]}", headers=headers)
    download_statements = len(statements)
    base = statistics.median(floor)
    return {
        "profile_bytes": size,
        "payloads": 100,
        "plistlib_loads_dumps_ms": median_ms(floor),
        "upload_ms": median_ms(uploads),
        "download_ms": median_ms(downloads),
        "upload_ratio_to_plistlib": round(statistics.median(uploads) / base, 1),
        "download_ratio_to_plistlib": round(statistics.median(downloads) / base, 1),
        "upload_sql_statements": upload_statements,
        "download_sql_statements": download_statements,
    }


def seed(app, count: int) -> float:
    start = time.perf_counter()
    with app.app_context():
        session = db.session
        for index in range(count):
            service.store_profile(session, service.ParsedProfile(small_profile(index), "xml"), source="bench", box=secret_box())
            if index % 500 == 499:
                session.commit()
        session.commit()
    return time.perf_counter() - start


def bench_list(engine, client, headers, repeat: int, total: int) -> dict:
    """Pages of 50; the baseline is the same page read with bare SQL (no ORM, no JSON), interleaved."""
    results = {}
    pages = {"first": 1, "middle": max(1, total // 100), "last": max(1, -(-total // 50))}
    for label, number in pages.items():
        url = f"/api/v1/profiles?page[size]=50&page[number]={number}"
        bare = sa.text("SELECT * FROM profiles ORDER BY id LIMIT 50 OFFSET :o").bindparams(o=(number - 1) * 50)
        samples, floor = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            with engine.connect() as conn:
                conn.execute(bare).all()
            floor.append(time.perf_counter() - start)
            start = time.perf_counter()
            response = client.get(url, headers=headers)
            samples.append(time.perf_counter() - start)
            assert response.status_code == 200 and response.get_json()["meta"]["total"] == total
        with statement_counter(engine) as statements:
            client.get(url, headers=headers)
        results[f"page_{label}_ms"] = median_ms(samples)
        results[f"page_{label}_bare_sql_ms"] = median_ms(floor)
        results[f"page_{label}_ratio_to_bare_sql"] = round(statistics.median(samples) / statistics.median(floor), 1)
        results[f"page_{label}_sql_statements"] = len(statements)
    samples = []
    url = "/api/v1/profiles?page[size]=50&sort=-id&include=payloads&filter[payload_type]=com.apple.wifi.managed"
    for _ in range(repeat):
        start = time.perf_counter()
        client.get(url, headers=headers)
        samples.append(time.perf_counter() - start)
    with statement_counter(engine) as statements:
        client.get(url, headers=headers)
    results["page_include_payloads_filtered_ms"] = median_ms(samples)
    results["page_include_payloads_sql_statements"] = len(statements)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=10_000, help="profiles stored for the list benchmark")
    parser.add_argument("--repeat", type=int, default=21, help="samples per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app, database, drop = make_app(Path(tmp))
        try:
            with app.app_context():
                # The download carries every password of the profile (docs/security.md, "Secrets"):
                # it needs scope `secrets`, and only then is it deep-equal to the upload.
                _, token = create_token(db.session, "bench", ["read", "write", "secrets"])
                db.session.commit()
                engine = db.engine
            headers = {"Authorization": f"Bearer {token}"}
            # Requests run outside an app context, so each one gets (and closes) its own session.
            client = app.test_client()
            big = bench_upload_download(engine, client, headers, args.repeat)
            stored = args.repeat + 1  # the 100-payload profiles uploaded above
            seconds = seed(app, args.profiles - stored)
            listing = bench_list(engine, client, headers, args.repeat, args.profiles)
            report = {
                "database": database,
                "repeat": args.repeat,
                "upload_download_100_payloads": big,
                "list": {"profiles_stored": args.profiles, "seed_seconds": round(seconds, 1), **listing},
            }
            print(json.dumps(report, indent=2))
            out = Path(__file__).resolve().parent / "results"
            out.mkdir(exist_ok=True)
            (out / f"profiles_{database}.json").write_text(json.dumps(report, indent=2))
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
            if drop:
                drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
