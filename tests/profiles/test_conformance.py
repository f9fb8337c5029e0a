"""The real-world profile corpus (conformance/profiles/INDEX.tsv) through upload, download and signing."""

from __future__ import annotations

import csv
import plistlib
from pathlib import Path

import pytest

from mdmserver.collaborators import secret_box
from mdmserver.pki import cms
from mdmserver.pki.service import get_server_identity
from mdmserver.profiles.plist import strip_leading
from tests.conftest import CONFORMANCE_DIR

from .helpers import ASPEN, assert_error, assert_same_plist, download, upload

# Read at collection time (it parametrizes the tests), from the same place as the conformance_dir
# fixture: when it is missing, test_corpus_index_is_complete skips loudly (fails in CI).
INDEX = CONFORMANCE_DIR / "profiles" / "INDEX.tsv"


def _rows() -> list[dict[str, str]]:
    if not INDEX.is_file():
        return []
    with INDEX.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


ROWS = _rows()
GOOD = [r for r in ROWS if r["parse_ok"] == "yes"]
#: Leading whitespace before <?xml is stripped (the documented policy), so this file is accepted.
STRIPPED = [r for r in ROWS if r["parse_ok"] == "no(ok after strip)"]
BAD = [r for r in ROWS if r["parse_ok"] == "no"]


def _id(row: dict[str, str]) -> str:
    return row["saved_path"].removeprefix("profiles/")


def _expected(data: bytes, signed: bool) -> object:
    if signed:
        data = cms.unwrap_signed(data).content
    return plistlib.loads(strip_leading(data))


def test_corpus_index_is_complete(conformance_dir):
    assert len(ROWS) == 94, "INDEX.tsv should list 94 profiles"
    assert len(TWINS) == 2
    assert len(GOOD) == 91 and len(BAD) == 2 and len(STRIPPED) == 1


@pytest.mark.parametrize("row", GOOD + STRIPPED, ids=_id)
def test_corpus_profile_round_trips(row, conformance_dir, client, auth, db_session):
    original = (conformance_dir / row["saved_path"]).read_bytes()
    headers = auth("read", "write", "secrets")
    response = upload(client, headers, original, filename=Path(row["saved_path"]).name)
    assert response.status_code == 201, response.get_data(as_text=True)[:800]
    body = response.get_json()
    profile_id = body["data"]["id"]
    assert isinstance(body["meta"]["warnings"], list)
    expected_types = [t for t in row["payload_types"].split(",") if t]
    assert [p["meta"]["payload_type"] for p in body["data"]["relationships"]["payloads"]["data"]] == expected_types
    assert body["data"]["attributes"]["signed"] is (row["signed"] == "yes")

    plain = download(client, headers, profile_id)
    assert plain.status_code == 200 and plain.mimetype == ASPEN
    assert plain.headers["Content-Disposition"].startswith("attachment; filename=")
    expected = _expected(original, row["signed"] == "yes")
    assert_same_plist(expected, plistlib.loads(plain.data))

    signed = download(client, headers, profile_id, signed="true")
    assert signed.status_code == 200 and signed.mimetype == ASPEN
    cert, _ = get_server_identity(db_session, secret_box())
    unwrapped = cms.unwrap_signed(signed.data, trust_roots=[cert])
    assert unwrapped.trusted
    assert_same_plist(expected, plistlib.loads(unwrapped.content))


@pytest.mark.parametrize("row", BAD, ids=_id)
def test_corpus_negative_case_is_a_clear_4xx(row, conformance_dir, client, auth):
    original = (conformance_dir / row["saved_path"]).read_bytes()
    response = upload(client, auth("write"), original)
    body = assert_error(response, 422)
    detail = body["errors"][0]["detail"]
    assert "line" in detail or "invalid" in detail, detail


@pytest.mark.parametrize("row", GOOD, ids=_id)
def test_corpus_truncated_variants_never_500(row, conformance_dir, client, auth):
    original = (conformance_dir / row["saved_path"]).read_bytes()
    headers = auth("write")
    for cut in (len(original) // 3, len(original) // 2, len(original) - 7):
        response = upload(client, headers, original[:cut])
        assert 400 <= response.status_code < 500, (cut, response.get_data(as_text=True)[:300])
        assert response.get_json()["meta"]["request_id"]


@pytest.mark.parametrize("row", GOOD + STRIPPED + BAD, ids=_id)
def test_corpus_byte_flipped_variants_never_500(row, conformance_dir, client, auth):
    original = (conformance_dir / row["saved_path"]).read_bytes()
    headers = auth("read", "write", "secrets")
    for fraction in (0.0, 0.1, 0.37, 0.5, 0.81, 0.99):
        data = bytearray(original)
        index = min(int(len(data) * fraction), len(data) - 1)
        data[index] ^= 0xA5
        response = upload(client, headers, bytes(data), replace="true")
        assert response.status_code < 500, (index, response.get_data(as_text=True)[:300])
        if response.status_code >= 400:
            assert response.get_json()["meta"]["request_id"]


def _twin(row: dict[str, str]) -> Path:
    signed = INDEX.parent.parent / row["saved_path"]
    return signed.parent.parent / signed.name


#: The README says two signed profiles have unsigned twins, identical once unwrapped.
TWINS = [r for r in GOOD if r["signed"] == "yes" and _twin(r).is_file()]


@pytest.mark.parametrize("row", TWINS, ids=_id)
def test_signed_profile_and_its_unsigned_twin_store_the_same_profile(row, conformance_dir, client, auth):
    signed_path = conformance_dir / row["saved_path"]
    twin_path = _twin(row)
    headers = auth("read", "write", "secrets")
    first = upload(client, headers, twin_path.read_bytes())
    assert first.status_code == 201
    second = upload(client, headers, signed_path.read_bytes(), replace="true")
    assert second.status_code == 200 and second.get_json()["data"]["attributes"]["revision"] == 2
    profile_id = first.get_json()["data"]["id"]
    unsigned = plistlib.loads(download(client, headers, profile_id, revision=1).data)
    resigned = plistlib.loads(download(client, headers, profile_id).data)
    assert_same_plist(unsigned, resigned)
