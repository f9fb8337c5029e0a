"""The package reader: valid .ipa and .pkg files built here, and malformed, truncated, zip-bomb and
randomly mutated ones. Every input is either read or refused with a ``PackageError`` naming the problem."""

from __future__ import annotations

import io
import plistlib
import random
import struct
import time
import zipfile
import zlib

import pytest

from mdmserver.apps import packages
from mdmserver.apps.packages import PackageError, PackageFacts, read_package
from tests.apps.builders import (
    distribution,
    info_plist,
    make_component_pkg,
    make_ipa,
    make_product_pkg,
    make_xar,
    package_info,
)


def read(data: bytes) -> PackageFacts:
    return read_package(io.BytesIO(data), len(data))


def refused(data: bytes) -> str:
    with pytest.raises(PackageError) as caught:
        read(data)
    assert caught.value.status == 422
    return caught.value.message


# --- valid packages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["xml-plist", "binary-plist"])
def test_an_ipa_is_read_from_its_info_plist(binary):
    facts = read(make_ipa(info_plist("com.example.notes", "1.2.3", "456", "Notes", "15.0", binary=binary)))
    assert facts == PackageFacts(kind="ipa", platform="ios", bundle_id="com.example.notes", name="Notes",
                                 version="1.2.3", build_version="456", minimum_os="15.0")


def test_an_ipa_name_falls_back_to_bundle_name_then_the_app_folder():
    assert read(make_ipa(info_plist(name=None, CFBundleName="Short"))).name == "Short"
    assert read(make_ipa(info_plist(name=None), app="My Notes.app")).name == "My Notes"


def test_an_ipa_may_leave_out_versions_and_minimum_os():
    plist = plistlib.dumps({"CFBundleIdentifier": "com.example.bare"})
    facts = read(make_ipa(plist))
    assert (facts.bundle_id, facts.version, facts.build_version, facts.minimum_os) == \
        ("com.example.bare", None, None, None)


def test_a_product_archive_is_read_from_its_distribution():
    facts = read(make_product_pkg())
    assert facts == PackageFacts(kind="pkg", platform="macos", bundle_id="com.example.tool", name="Example Tool",
                                 version="2.1.0", build_version=None, minimum_os="12.0")


def test_a_distribution_without_product_uses_its_pkg_ref_and_top_level_os_versions():
    facts = read(make_product_pkg(distribution(product_id=None, version="4.0", minimum_os="13.1", nested_os=False)))
    assert (facts.bundle_id, facts.version, facts.minimum_os) == ("com.example.tool.pkg", "4.0", "13.1")


def test_the_lowest_allowed_os_version_is_the_minimum():
    dist = distribution(minimum_os=None).replace(
        b"<volume-check></volume-check>",
        b'<allowed-os-versions><os-version min="14.2"/><os-version min="11.0"/>'
        b'<os-version min="13.0"/></allowed-os-versions>')
    assert read(make_product_pkg(dist)).minimum_os == "11.0"


def test_a_distribution_without_os_versions_has_no_minimum():
    assert read(make_product_pkg(distribution(minimum_os=None))).minimum_os is None


def test_a_component_package_is_read_from_its_package_info():
    facts = read(make_component_pkg())
    assert facts == PackageFacts(kind="pkg", platform="macos", bundle_id="com.example.agent", name="Agent",
                                 version="3.0", build_version="300", minimum_os=None)


def test_xar_members_may_be_stored_uncompressed_and_without_checksums():
    data = make_xar({"Distribution": distribution()}, compress=False, checksum=False)
    assert read(data).bundle_id == "com.example.tool"


# --- malformed packages: each refusal names its problem ------------------------------------------------


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(("data", "message"), [
    (b"", "not a zip archive (.ipa) nor a xar archive (.pkg)"),
    (b"%PDF-1.7 hello", "not a zip archive (.ipa) nor a xar archive (.pkg)"),
    (b"PK\x03\x04" + b"\x00" * 10, "too short for its end record"),
    (b"PK\x03\x04" + b"\x00" * 40, "no end of central directory record"),
    (_zip({"readme.txt": b"hi"}), "no Payload/ folder"),
    (_zip({"Payload/readme.txt": b"hi"}), "Payload/ holds no .app"),
    (_zip({"Payload/A.app/Info.plist": info_plist(), "Payload/B.app/Info.plist": info_plist()}),
     "Payload/ holds more than one .app: A.app, B.app"),
    (_zip({"Payload/A.app/A": b"x"}), "Payload/A.app has no Info.plist"),
    (make_ipa(b"not a plist"), "Payload/Notes.app/Info.plist: not a property list"),
    (make_ipa(plistlib.dumps(["a"])), "Info.plist is not a dictionary"),
    (make_ipa(plistlib.dumps({"CFBundleName": "x"})), "has no CFBundleIdentifier"),
    (make_ipa(plistlib.dumps({"CFBundleIdentifier": 5})), "CFBundleIdentifier must be a string"),
    (make_ipa(info_plist(version="9" * 65)), "CFBundleShortVersionString is longer than 64 characters"),
    (make_ipa(b'<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "b">]><plist><string>&a;</string></plist>'),
     "Info.plist"),
])
def test_malformed_ipas_are_refused_naming_the_problem(data, message):
    assert message in refused(data)


def test_an_encrypted_member_is_refused():
    data = bytearray(make_ipa())
    # set the "encrypted" flag bit of every local and central header
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (at := data.find(signature, start)) >= 0:
            data[at + flag_offset] |= 1
            start = at + 4
    assert "zip archive" in refused(bytes(data))


def test_a_zip_bomb_info_plist_is_refused_by_its_ratio():
    bomb = info_plist(Padding="A" * 900_000)
    message = refused(make_ipa(bomb))
    assert "compressed more than 200:1" in message


def test_an_oversized_info_plist_is_refused():
    big = info_plist(Padding=random.Random(1).randbytes(800_000).hex())  # 1.6 MB, barely compressible
    assert "Info.plist is larger than 1024 KiB" in refused(make_ipa(big))


def test_a_plist_that_lies_about_its_size_is_read_no_further_than_the_limit():
    data = bytearray(make_ipa(info_plist(Padding="A" * 2_000_000), compression=zipfile.ZIP_STORED))
    # rewrite the declared sizes of the Info.plist (local and central headers) to a small number
    for signature, size_offsets in ((b"PK\x03\x04", (18, 22)), (b"PK\x01\x02", (20, 24))):
        at = data.find(signature)
        for offset in size_offsets:
            struct.pack_into("<I", data, at + offset, 1000)
    message = refused(bytes(data))
    assert "zip archive" in message or "Info.plist" in message


def test_too_many_zip_entries_are_refused_before_reading_them(monkeypatch):
    monkeypatch.setattr(packages, "MAX_ZIP_ENTRIES", 3)
    data = make_ipa(extra={f"Payload/Notes.app/f{i}": b"x" for i in range(5)})
    assert "more than 3 entries" in refused(data)


def test_a_huge_central_directory_is_refused_before_reading_it():
    data = bytearray(make_ipa())
    at = data.rfind(b"PK\x05\x06")
    struct.pack_into("<L", data, at + 12, 0x7FFF0000)  # central directory size
    assert "central directory is larger than 64 MiB" in refused(bytes(data))


def _xar_header(toc_compressed: int, toc_length: int, header_size: int = 28) -> bytes:
    return struct.pack(">4sHHQQI", b"xar!", header_size, 1, toc_compressed, toc_length, 1)


def _xar_with_toc(toc: bytes) -> bytes:
    compressed = zlib.compress(toc)
    return _xar_header(len(compressed), len(toc)) + compressed


_BOMB = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
         b'<installer-gui-script><title>&lol2;</title></installer-gui-script>')


@pytest.mark.parametrize(("data", "message"), [
    (b"xar!\x00", "the header is shorter than 28 bytes"),
    (_xar_header(10, 10, header_size=12) + b"\x00" * 10, "header size 12 is below 28"),
    (_xar_header(2 * 1024 * 1024, 100), "the xar TOC is larger than 1 MiB"),
    (_xar_header(100, 2 * 1024 * 1024), "the xar TOC is larger than 1 MiB"),
    (_xar_header(100, 100) + b"\x00" * 20, "the TOC runs past the end of the file"),
    (_xar_header(5, 5) + b"hello", "the xar TOC is not zlib-compressed data"),
    (_xar_header(len(zlib.compress(b"<xar/>")), 99) + zlib.compress(b"<xar/>"), "its header says 99"),
    (_xar_with_toc(b"<xar><toc>"), "the xar TOC is not well-formed XML"),
    (_xar_with_toc(b"<other/>"), "no <xar><toc> element"),
    (_xar_with_toc(b"<xar><toc></toc></xar>"), "neither a Distribution nor a PackageInfo"),
    (_xar_with_toc(b'<!DOCTYPE x [<!ENTITY a "b">]><xar><toc/></xar>'), "XML declarations (DTD, entities)"),
    (_xar_with_toc(b"<xar><toc><file><name>Distribution</name></file></toc></xar>"), "Distribution has no <data>"),
    (_xar_with_toc(b"<xar><toc><file><name>Distribution</name><data><offset>x</offset></data></file></toc></xar>"),
     "<offset> is not a number"),
    (_xar_with_toc(b"<xar><toc><file><name>Distribution</name><data><offset>0</offset><length>10</length>"
                   b"<size>10</size></data></file></toc></xar>"),
     "truncated xar archive: the heap ends before the files its TOC lists"),
    (_xar_with_toc(b"<xar><toc><file><name>Distribution</name><data><offset>0</offset><length>2000000</length>"
                   b"<size>10</size></data></file></toc></xar>") + bytes(2_000_000), "Distribution is larger than 1 MiB"),
    (make_xar({"Distribution": _BOMB}), "Distribution: XML declarations (DTD, entities) are not allowed"),
    (make_xar({"Distribution": b"<installer-gui-script><title>x"}), "Distribution is not well-formed XML"),
    (make_xar({"Distribution": b"<other/>"}), "the root element is not <installer-gui-script>"),
    (make_xar({"Distribution": b"<installer-gui-script/>"}), "names no product id and no pkg-ref"),
    (make_xar({"PackageInfo": b"<pkg-info/>"}), "PackageInfo has no identifier"),
    (make_xar({"PackageInfo": b"<installer-gui-script/>"}), "the root element is not <pkg-info>"),
    (make_xar({"PackageInfo": package_info(version="1" * 65)}), "PackageInfo: version is longer than 64"),
])
def test_malformed_pkgs_are_refused_naming_the_problem(data, message):
    assert message in refused(data)


def test_a_member_with_a_wrong_checksum_is_refused():
    data = make_xar({"Distribution": distribution()}, compress=False)
    at = data.rindex(b"Example Tool")
    tampered = data[:at] + b"Exemple Tool" + data[at + 12:]
    assert "Distribution does not match its sha1 checksum" in refused(tampered)


def test_an_unknown_member_encoding_is_refused():
    data = make_xar({"Distribution": distribution()})
    toc_end = 28 + struct.unpack(">Q", data[8:16])[0]
    toc = zlib.decompress(data[28:toc_end]).replace(b"application/x-gzip", b"application/x-bzip2")
    compressed = zlib.compress(toc)
    rebuilt = _xar_header(len(compressed), len(toc)) + compressed + data[toc_end:]
    assert "unsupported encoding: application/x-bzip2" in refused(rebuilt)


def test_a_member_bomb_is_refused():
    dist = distribution(title="x" * 3_000_000)
    assert "Distribution is larger than 1 MiB" in refused(make_xar({"Distribution": dist}))


# --- truncation and random mutation -----------------------------------------------------------------


@pytest.mark.parametrize("build", [make_ipa, make_product_pkg, make_component_pkg])
def test_every_truncation_is_refused(build):
    data = build()
    for length in range(0, len(data) - 1, max(1, len(data) // 150)):
        refused(data[:length])


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        at = rng.randrange(len(out)) if out else 0
        if choice < 0.5 and out:
            out[at] = rng.randrange(256)
        elif choice < 0.7:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif choice < 0.9 and out:
            del out[at:at + rng.randint(1, 32)]
        else:
            value = rng.choice([0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, 2**63 - 1])
            width = rng.choice([2, 4, 8])
            out[at:at + width] = value.to_bytes(8, "big")[-width:]
    return bytes(out)


@pytest.mark.parametrize("build", [make_ipa, make_product_pkg, make_component_pkg])
def test_random_mutations_are_read_or_refused_quickly(build):
    rng = random.Random(f"apps-{build.__name__}")
    original = build()
    outcomes = {"read": 0, "refused": 0}
    for _ in range(300):
        data = _mutate(rng, original)
        started = time.monotonic()
        try:
            facts = read(data)
        except PackageError:
            outcomes["refused"] += 1
        else:
            assert isinstance(facts, PackageFacts)
            outcomes["read"] += 1
        assert time.monotonic() - started < 1.0
    assert outcomes["refused"] > 0


@pytest.mark.parametrize(("inner", "wrap"), [
    (info_plist(), make_ipa),
    (info_plist(binary=True), make_ipa),
    (distribution(), lambda d: make_xar({"Distribution": d})),
    (package_info(), lambda d: make_xar({"PackageInfo": d})),
], ids=["xml-info-plist", "binary-info-plist", "distribution", "package-info"])
def test_mutated_inner_documents_are_read_or_refused(inner, wrap):
    """Mutations inside the compressed layer (the plist, the XML), which byte flips of the archive rarely reach."""
    rng = random.Random(f"inner-{inner[:20]!r}")
    for _ in range(200):
        try:
            read(wrap(_mutate(rng, inner)))
        except PackageError:
            pass
