"""What an uploaded app package says about itself, read without extracting it to disk.

Two formats: an ``.ipa`` (iOS and iPadOS) is a zip archive whose ``Payload/<Name>.app/Info.plist`` names
the bundle; a ``.pkg`` (macOS) is a xar archive (a 28-byte big-endian header starting ``xar!``, a
zlib-compressed XML table of contents, then the heap of file data) whose ``Distribution`` (a product
archive) or ``PackageInfo`` (a component package) names it. The bytes decide which format a file is.

Every read is bounded before it happens (the zip's central directory and entry count, the Info.plist's
size and compression ratio, the xar TOC's and members' sizes), XML is parsed with entity and DTD
declarations refused (``defusedxml``), and every failure is one :class:`PackageError` whose message names
the problem. This module is pure: no Flask, no SQLAlchemy, no database.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_xml

from mdmserver.errors import InputError
from mdmserver.protocol.plist import ProtocolError, load_plist

#: Most entries an .ipa's zip may have (an app bundle with its frameworks has thousands, not millions).
MAX_ZIP_ENTRIES = 200_000
#: Largest zip central directory read into memory.
MAX_CENTRAL_DIRECTORY_BYTES = 64 * 1024 * 1024
#: Largest Info.plist (uncompressed).
MAX_INFO_PLIST_BYTES = 1024 * 1024
#: Highest uncompressed/compressed ratio accepted for the Info.plist (a zip bomb's is in the thousands).
MAX_COMPRESSION_RATIO = 200
#: Largest xar table of contents (compressed and uncompressed) and largest Distribution/PackageInfo.
MAX_TOC_BYTES = 1024 * 1024
MAX_MEMBER_BYTES = 1024 * 1024
#: Longest value kept from a package (the catalogue's columns: bundle id 255, version 64, minimum OS 32).
MAX_BUNDLE_ID = 255
MAX_NAME = 255
MAX_VERSION = 64
MAX_MINIMUM_OS = 32

_XAR_MAGIC = b"xar!"
_XAR_HEADER = struct.Struct(">4sHHQQI")  # magic, header size, version, TOC compressed, TOC uncompressed, cksum
_ZIP_EOCD = struct.Struct("<4s4H2LH")  # signature, disk, cd disk, entries here, entries, cd size, cd offset, comment
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk, zip64 EOCD offset, disks
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # signature, size, versions, disks, entries here, entries, cd size, offset
_ZIP_MAX_COMMENT = 0xFFFF

#: The two formats (the values of ``apps.models.PackageKind``, which this pure module cannot import) and
#: the platform each installs on (values of ``records.devices.Platform``).
IPA, PKG = "ipa", "pkg"
IPA_PLATFORM, PKG_PLATFORM = "ios", "macos"

#: xar member encodings: the style attribute → how to decode (xar names zlib's format "x-gzip").
_RAW, _ZLIB = "application/octet-stream", "application/x-gzip"
_XAR_CHECKSUMS = {"sha1": "sha1", "sha256": "sha256", "sha512": "sha512", "md5": "md5"}


class PackageError(InputError):
    """An uploaded package that cannot be read; the message names the problem (answered 422)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=422, code="invalid_package")
        self.message = message


@dataclass(frozen=True)
class PackageFacts:
    """What the package says about the app it installs."""

    kind: str  # a value of ``apps.models.PackageKind``: "ipa" or "pkg"
    platform: str  # "ios" (iPadOS too) or "macos"
    bundle_id: str
    name: str
    version: str | None  # CFBundleShortVersionString, or the product's / package's version
    build_version: str | None  # CFBundleVersion
    minimum_os: str | None  # MinimumOSVersion, or the lowest allowed-os-versions/os-version@min


def read_package(file: BinaryIO, size: int) -> PackageFacts:
    """Read a package's facts from a seekable binary file of ``size`` bytes; ``PackageError`` when it is
    neither a readable .ipa nor a readable .pkg."""
    file.seek(0)
    magic = file.read(4)
    if magic == _XAR_MAGIC:
        return _read_pkg(file, size)
    if magic[:2] == b"PK":
        return _read_ipa(file, size)
    raise PackageError("not a zip archive (.ipa) nor a xar archive (.pkg)")


# --- .ipa ------------------------------------------------------------------------------------------


def _read_ipa(file: BinaryIO, size: int) -> PackageFacts:
    _check_zip_directory(file, size)
    try:
        file.seek(0)
        with zipfile.ZipFile(file) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ZIP_ENTRIES:
                raise PackageError(f"the zip archive has more than {MAX_ZIP_ENTRIES} entries")
            app_dir = _app_directory(infos)
            plist_name = f"Payload/{app_dir}/Info.plist"
            info = next((i for i in infos if i.filename == plist_name), None)
            if info is None:
                raise PackageError(f"Payload/{app_dir} has no Info.plist")
            if info.file_size > MAX_INFO_PLIST_BYTES:
                raise PackageError(f"{plist_name} is larger than {MAX_INFO_PLIST_BYTES // 1024} KiB")
            if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
                raise PackageError(f"{plist_name} is compressed more than {MAX_COMPRESSION_RATIO}:1 (a zip bomb?)")
            with archive.open(info) as member:
                data = member.read(MAX_INFO_PLIST_BYTES + 1)
    except PackageError:
        raise
    except RuntimeError as exc:  # zipfile's answer to an encrypted member
        raise PackageError(f"cannot read the zip archive: {exc}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, EOFError, OSError,
            ValueError, struct.error, OverflowError, IndexError, KeyError) as exc:
        raise PackageError(f"not a readable zip archive: {exc or type(exc).__name__}") from None
    if len(data) > MAX_INFO_PLIST_BYTES:
        raise PackageError(f"{plist_name} is larger than {MAX_INFO_PLIST_BYTES // 1024} KiB")
    try:
        plist = load_plist(data, max_bytes=MAX_INFO_PLIST_BYTES)
    except ProtocolError as exc:
        raise PackageError(f"{plist_name}: {exc.message}") from None
    if not isinstance(plist, dict):
        raise PackageError(f"{plist_name} is not a dictionary")
    bundle_id = _plist_text(plist, "CFBundleIdentifier", plist_name, MAX_BUNDLE_ID)
    if not bundle_id:
        raise PackageError(f"{plist_name} has no CFBundleIdentifier")
    name = (_plist_text(plist, "CFBundleDisplayName", plist_name, MAX_NAME)
            or _plist_text(plist, "CFBundleName", plist_name, MAX_NAME)
            or app_dir.removesuffix(".app")[:MAX_NAME] or bundle_id)
    return PackageFacts(
        kind=IPA,
        platform=IPA_PLATFORM,
        bundle_id=bundle_id,
        name=name,
        version=_plist_text(plist, "CFBundleShortVersionString", plist_name, MAX_VERSION),
        build_version=_plist_text(plist, "CFBundleVersion", plist_name, MAX_VERSION),
        minimum_os=_plist_text(plist, "MinimumOSVersion", plist_name, MAX_MINIMUM_OS),
    )


def _check_zip_directory(file: BinaryIO, size: int) -> None:
    """Refuse a zip whose central directory is too large or lists too many entries, before ``zipfile``
    reads it all into memory (it keeps one object per entry). Finds the end record as ``zipfile`` does:
    at the very end, else the last signature within the longest comment."""
    if size < _ZIP_EOCD.size:
        raise PackageError("not a zip archive: too short for its end record")
    file.seek(size - _ZIP_EOCD.size)
    tail = file.read(_ZIP_EOCD.size)
    position = size - _ZIP_EOCD.size
    if not (tail[:4] == b"PK\x05\x06" and tail[-2:] == b"\x00\x00"):
        start = max(0, size - _ZIP_MAX_COMMENT - _ZIP_EOCD.size)
        file.seek(start)
        tail = file.read(size - start)
        found = tail.rfind(b"PK\x05\x06")
        if found < 0 or len(tail) - found < _ZIP_EOCD.size:
            raise PackageError("not a zip archive: no end of central directory record (truncated?)")
        position = start + found
        tail = tail[found:found + _ZIP_EOCD.size]
    _, _, _, _, entries, cd_size, _, _ = _ZIP_EOCD.unpack(tail)
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF:
        entries, cd_size = _zip64_directory(file, position)
    if entries > MAX_ZIP_ENTRIES:
        raise PackageError(f"the zip archive has more than {MAX_ZIP_ENTRIES} entries")
    if cd_size > MAX_CENTRAL_DIRECTORY_BYTES:
        raise PackageError(f"the zip central directory is larger than {MAX_CENTRAL_DIRECTORY_BYTES // 2**20} MiB")


def _zip64_directory(file: BinaryIO, eocd_position: int) -> tuple[int, int]:
    if eocd_position < _ZIP64_LOCATOR.size:
        raise PackageError("not a readable zip archive: a zip64 end record without its locator")
    file.seek(eocd_position - _ZIP64_LOCATOR.size)
    signature, _, offset, _ = _ZIP64_LOCATOR.unpack(file.read(_ZIP64_LOCATOR.size))
    if signature != b"PK\x06\x07":
        raise PackageError("not a readable zip archive: a zip64 end record without its locator")
    file.seek(offset)
    record = file.read(_ZIP64_EOCD.size)
    if len(record) < _ZIP64_EOCD.size or record[:4] != b"PK\x06\x06":
        raise PackageError("not a readable zip archive: the zip64 end record is missing")
    fields = _ZIP64_EOCD.unpack(record)
    return fields[6], fields[7]


def _app_directory(infos: list[zipfile.ZipInfo]) -> str:
    """The one ``<Name>.app`` directly under ``Payload/``."""
    apps = set()
    for info in infos:
        parts = info.filename.split("/")
        if len(parts) >= 3 and parts[0] == "Payload" and parts[1].endswith(".app") and len(parts[1]) > 4:
            apps.add(parts[1])
    if not apps:
        if not any(i.filename.startswith("Payload/") for i in infos):
            raise PackageError("not an .ipa: the zip archive has no Payload/ folder")
        raise PackageError("Payload/ holds no .app")
    if len(apps) > 1:
        raise PackageError(f"Payload/ holds more than one .app: {', '.join(sorted(apps)[:5])}")
    return apps.pop()


def _plist_text(plist: dict, key: str, where: str, limit: int) -> str | None:
    value = plist.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PackageError(f"{where}: {key} must be a string")
    value = value.strip()
    if len(value) > limit:
        raise PackageError(f"{where}: {key} is longer than {limit} characters")
    return value or None


# --- .pkg ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Heap:
    file: BinaryIO
    start: int
    size: int  # of the whole archive


def _read_pkg(file: BinaryIO, size: int) -> PackageFacts:
    file.seek(0)
    header = file.read(_XAR_HEADER.size)
    if len(header) < _XAR_HEADER.size:
        raise PackageError("truncated xar archive: the header is shorter than 28 bytes")
    _, header_size, _, toc_compressed, toc_length, _ = _XAR_HEADER.unpack(header)
    if header_size < _XAR_HEADER.size:
        raise PackageError(f"not a xar archive: header size {header_size} is below 28")
    if toc_compressed > MAX_TOC_BYTES or toc_length > MAX_TOC_BYTES:
        raise PackageError(f"the xar TOC is larger than {MAX_TOC_BYTES // 2**20} MiB")
    if header_size + toc_compressed > size:
        raise PackageError("truncated xar archive: the TOC runs past the end of the file")
    file.seek(header_size)
    toc = _inflate(file.read(toc_compressed), toc_length, "the xar TOC")
    root = _xml(toc, "the xar TOC")
    toc_element = root.find("toc") if root.tag == "xar" else None
    if toc_element is None:
        raise PackageError("the xar TOC has no <xar><toc> element")
    heap = _Heap(file, header_size + toc_compressed, size)
    _check_heap(heap, toc_element)
    distribution = _member(toc_element, "Distribution")
    if distribution is not None:
        return _from_distribution(_xml(_read_member(heap, distribution, "Distribution"), "Distribution"))
    package_info = _member(toc_element, "PackageInfo")
    if package_info is not None:
        return _from_package_info(_xml(_read_member(heap, package_info, "PackageInfo"), "PackageInfo"))
    raise PackageError("the .pkg has neither a Distribution nor a PackageInfo (not an installer package)")


def _check_heap(heap: _Heap, toc: Element) -> None:
    """Every file the TOC lists lies inside the archive: a truncated upload is refused here, not by the
    Mac that installs it."""
    for data in toc.iter("data"):
        end = _number(data, "offset", "a file") + _number(data, "length", "a file")
        if heap.start + end > heap.size:
            raise PackageError("truncated xar archive: the heap ends before the files its TOC lists")


def _inflate(data: bytes, expected: int, what: str) -> bytes:
    decompressor = zlib.decompressobj()
    try:
        out = decompressor.decompress(data, MAX_TOC_BYTES + 1)
    except zlib.error as exc:
        raise PackageError(f"{what} is not zlib-compressed data: {exc}") from None
    if len(out) > MAX_TOC_BYTES or decompressor.unconsumed_tail:
        raise PackageError(f"{what} is larger than {MAX_TOC_BYTES // 2**20} MiB uncompressed")
    if not decompressor.eof:
        raise PackageError(f"{what} is truncated (its compressed data ends early)")
    if len(out) != expected:
        raise PackageError(f"{what} is {len(out)} bytes uncompressed, its header says {expected}")
    return out


def _xml(data: bytes, what: str) -> Element:
    try:
        return parse_xml(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise PackageError(f"{what}: XML declarations (DTD, entities) are not allowed") from None
    except (ParseError, ValueError, UnicodeError, RecursionError) as exc:
        raise PackageError(f"{what} is not well-formed XML: {exc}") from None


def _member(toc: Element, name: str) -> Element | None:
    """The top-level ``<file>`` named ``name`` in the TOC."""
    for entry in toc.findall("file"):
        if (entry.findtext("name") or "").strip() == name:
            return entry
    return None


def _number(element: Element, path: str, what: str) -> int:
    text = (element.findtext(path) or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise PackageError(f"{what}: <{path}> is not a number in the xar TOC")
    return int(text)


def _read_member(heap: _Heap, entry: Element, what: str) -> bytes:
    data = entry.find("data")
    if data is None:
        raise PackageError(f"{what} has no <data> in the xar TOC")
    offset, length = _number(data, "offset", what), _number(data, "length", what)
    extracted = _number(data, "size", what)
    if length > MAX_MEMBER_BYTES or extracted > MAX_MEMBER_BYTES:
        raise PackageError(f"{what} is larger than {MAX_MEMBER_BYTES // 2**20} MiB")
    heap.file.seek(heap.start + offset)
    raw = heap.file.read(length)
    encoding = data.find("encoding")
    style = encoding.get("style", _RAW) if encoding is not None else _RAW
    if style == _ZLIB:
        content = _inflate(raw, extracted, what)
    elif style == _RAW:
        content = raw
    else:
        raise PackageError(f"{what} is stored with an unsupported encoding: {style[:60]}")
    if len(content) != extracted:
        raise PackageError(f"{what} is {len(content)} bytes, the xar TOC says {extracted}")
    _check_digest(data.find("extracted-checksum"), content, what)
    return content


def _check_digest(checksum: Element | None, content: bytes, what: str) -> None:
    if checksum is None:
        return
    algorithm = _XAR_CHECKSUMS.get((checksum.get("style") or "").lower())
    if algorithm is None:
        return  # an algorithm we do not know: the archive's own checksum is not ours to enforce
    if hashlib.new(algorithm, content).hexdigest() != (checksum.text or "").strip().lower():
        raise PackageError(f"{what} does not match its {algorithm} checksum in the xar TOC")


def _attribute(element: Element | None, name: str, what: str, limit: int) -> str | None:
    if element is None:
        return None
    value = (element.get(name) or "").strip()
    if len(value) > limit:
        raise PackageError(f"{what}: {name} is longer than {limit} characters")
    return value or None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split(".")[:8])


def _from_distribution(root: Element) -> PackageFacts:
    """A product archive: ``product@id``/``@version`` (else the first ``pkg-ref`` with a version), the
    ``title``, and the lowest ``allowed-os-versions/os-version@min`` (top level or inside
    ``volume-check``)."""
    if root.tag != "installer-gui-script":
        raise PackageError("Distribution: the root element is not <installer-gui-script>")
    product = root.find("product")
    bundle_id = _attribute(product, "id", "Distribution: product", MAX_BUNDLE_ID)
    version = _attribute(product, "version", "Distribution: product", MAX_VERSION)
    if bundle_id is None:
        ref = next((r for r in root.findall("pkg-ref") if r.get("id") and r.get("version")), None)
        bundle_id = _attribute(ref, "id", "Distribution: pkg-ref", MAX_BUNDLE_ID)
        version = version or _attribute(ref, "version", "Distribution: pkg-ref", MAX_VERSION)
    if bundle_id is None:
        raise PackageError("Distribution names no product id and no pkg-ref with an id and a version")
    title = " ".join((root.findtext("title") or "").split())[:MAX_NAME] or bundle_id
    minimums = [
        value for element in [*root.findall("allowed-os-versions/os-version"),
                              *root.findall("volume-check/allowed-os-versions/os-version")]
        if (value := _attribute(element, "min", "Distribution: os-version", MAX_MINIMUM_OS))
    ]
    return PackageFacts(
        kind=PKG,
        platform=PKG_PLATFORM,
        bundle_id=bundle_id,
        name=title,
        version=version,
        build_version=None,
        minimum_os=min(minimums, key=_version_key) if minimums else None,
    )


def _from_package_info(root: Element) -> PackageFacts:
    """A component package: ``pkg-info@identifier``/``@version``; the name and build version of its first
    ``bundle`` (else the identifier). A PackageInfo carries no minimum macOS version."""
    if root.tag != "pkg-info":
        raise PackageError("PackageInfo: the root element is not <pkg-info>")
    bundle_id = _attribute(root, "identifier", "PackageInfo", MAX_BUNDLE_ID)
    if bundle_id is None:
        raise PackageError("PackageInfo has no identifier")
    bundle = root.find("bundle")
    path = _attribute(bundle, "path", "PackageInfo: bundle", 1024) or ""
    name = path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".app")[:MAX_NAME]
    return PackageFacts(
        kind=PKG,
        platform=PKG_PLATFORM,
        bundle_id=bundle_id,
        name=name or bundle_id,
        version=_attribute(root, "version", "PackageInfo", MAX_VERSION),
        build_version=_attribute(bundle, "CFBundleVersion", "PackageInfo: bundle", MAX_VERSION),
        minimum_os=None,
    )
