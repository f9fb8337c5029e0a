"""Small, valid app packages for the tests, built from scratch: an .ipa (a zip with
``Payload/<Name>.app/Info.plist``) and a .pkg (a xar archive, written by the tiny writer below).

Test code, not product code: the server's reader (``mdmserver.apps.packages``) is checked against these.
"""

from __future__ import annotations

import hashlib
import io
import plistlib
import struct
import zipfile
import zlib
from typing import Any
from xml.sax.saxutils import escape, quoteattr

Tree = dict[str, "bytes | Tree"]


def info_plist(bundle_id: str = "com.example.notes", version: str = "1.0", build: str = "100",
               name: str | None = "Notes", minimum_os: str | None = "16.0", binary: bool = False,
               **extra: Any) -> bytes:
    values: dict[str, Any] = {"CFBundleIdentifier": bundle_id, "CFBundleShortVersionString": version,
                              "CFBundleVersion": build, "CFBundleExecutable": "Notes", **extra}
    if name is not None:
        values["CFBundleDisplayName"] = name
    if minimum_os is not None:
        values["MinimumOSVersion"] = minimum_os
    return plistlib.dumps(values, fmt=plistlib.FMT_BINARY if binary else plistlib.FMT_XML)


def make_ipa(plist: bytes | None = None, *, app: str = "Notes.app", filler: bytes = b"",
             extra: dict[str, bytes] | None = None, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """An .ipa: the Info.plist, an executable and ``filler`` (stored uncompressed: makes it large)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.writestr(f"Payload/{app}/Info.plist", info_plist() if plist is None else plist)
        archive.writestr(f"Payload/{app}/Notes", b"\xcf\xfa\xed\xfe" + b"\x00" * 64)
        if filler:
            archive.writestr(zipfile.ZipInfo(f"Payload/{app}/Assets.car"), filler, zipfile.ZIP_STORED)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def distribution(product_id: str | None = "com.example.tool", version: str = "2.1.0", title: str = "Example Tool",
                 minimum_os: str | None = "12.0", nested_os: bool = True, prolog: str = "") -> bytes:
    os_versions = (f'<allowed-os-versions><os-version min={quoteattr(minimum_os)}/></allowed-os-versions>'
                   if minimum_os else "")
    checks = f"<volume-check>{os_versions}</volume-check>" if nested_os else os_versions
    product = f'<product id={quoteattr(product_id)} version={quoteattr(version)}/>' if product_id else ""
    return (f'<?xml version="1.0" encoding="utf-8"?>\n{prolog}'
            f'<installer-gui-script minSpecVersion="2">\n'
            f'  <title>{escape(title)}</title>\n'
            f'  <options customize="never" require-scripts="false" hostArchitectures="x86_64,arm64"/>\n'
            f'  {checks}\n'
            f'  <choices-outline><line choice="default"><line choice="tool"/></line></choices-outline>\n'
            f'  <choice id="tool" visible="false"><pkg-ref id="com.example.tool.pkg"/></choice>\n'
            f'  <pkg-ref id="com.example.tool.pkg" version="{version}" onConclusion="none">#tool.pkg</pkg-ref>\n'
            f'  {product}\n'
            f'</installer-gui-script>\n').encode()


def package_info(identifier: str = "com.example.agent", version: str = "3.0", bundle_path: str = "./Agent.app",
                 bundle_version: str = "300") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n'
            f'<pkg-info overwrite-permissions="true" relocatable="false" identifier="{identifier}" '
            f'postinstall-action="none" version="{version}" format-version="2" install-location="/Applications" '
            f'auth="root">\n'
            f'  <payload numberOfFiles="12" installKBytes="2048"/>\n'
            f'  <bundle path="{bundle_path}" id="com.example.Agent" CFBundleShortVersionString="{version}" '
            f'CFBundleVersion="{bundle_version}"/>\n'
            f'  <bundle-version><bundle id="com.example.Agent"/></bundle-version>\n'
            f'</pkg-info>\n').encode()


def make_xar(tree: Tree, *, compress: bool = True, checksum: bool = True) -> bytes:
    """A xar archive of ``tree`` (name → bytes, or name → sub-tree for a directory): the 28-byte header,
    the zlib-compressed XML TOC, then the heap, which starts with the TOC's SHA-1 as xar writes it."""
    heap = bytearray()
    counter = [0]
    toc_checksum_size = 20

    def entries(node: Tree) -> str:
        out = []
        for name, value in node.items():
            counter[0] += 1
            if isinstance(value, dict):
                out.append(f'<file id="{counter[0]}"><name>{escape(name)}</name><type>directory</type>'
                           f'{entries(value)}</file>')
                continue
            stored = zlib.compress(value) if compress else value
            offset = toc_checksum_size + len(heap)
            heap.extend(stored)
            style = "application/x-gzip" if compress else "application/octet-stream"
            digest = (f'<extracted-checksum style="sha1">{hashlib.sha1(value).hexdigest()}</extracted-checksum>'
                      f'<archived-checksum style="sha1">{hashlib.sha1(stored).hexdigest()}</archived-checksum>'
                      if checksum else "")
            out.append(f'<file id="{counter[0]}"><name>{escape(name)}</name><type>file</type><data>'
                       f'<length>{len(stored)}</length><offset>{offset}</offset><size>{len(value)}</size>'
                       f'<encoding style="{style}"/>{digest}</data></file>')
        return "".join(out)

    body = entries(tree)
    toc = (f'<?xml version="1.0" encoding="UTF-8"?>\n<xar>\n <toc>\n'
           f'  <checksum style="sha1"><offset>0</offset><size>{toc_checksum_size}</size></checksum>\n'
           f'  <creation-time>2026-11-27T12:00:00</creation-time>\n  {body}\n </toc>\n</xar>\n').encode()
    compressed = zlib.compress(toc)
    header = struct.pack(">4sHHQQI", b"xar!", 28, 1, len(compressed), len(toc), 1)
    return header + compressed + hashlib.sha1(compressed).digest() + bytes(heap)


def make_product_pkg(dist: bytes | None = None, *, payload: bytes = b"payload") -> bytes:
    """A product archive: Distribution plus one component package folder."""
    return make_xar({
        "Distribution": distribution() if dist is None else dist,
        "Resources": {"en.lproj": {}},
        "tool.pkg": {"PackageInfo": package_info("com.example.tool.pkg", "2.1.0"), "Bom": b"BOMStore",
                     "Payload": payload},
    })


def make_component_pkg(info: bytes | None = None) -> bytes:
    return make_xar({"PackageInfo": package_info() if info is None else info, "Bom": b"BOMStore",
                     "Payload": b"\x1f\x8b" + b"\x00" * 32})


def chunk_sha256s(data: bytes, size: int = 10 * 1024 * 1024) -> list[str]:
    """SHA-256 of each ``size`` bytes, computed here independently of the server."""
    return [hashlib.sha256(data[i:i + size]).hexdigest() for i in range(0, max(len(data), 1), size)]
