"""WSGI factories for bench/connect_bench.py (gunicorn imports these by name).

``mdm_app()`` is mdmserver itself. ``baseline_app()`` is the smallest Flask app doing the unavoidable
work of a connect request: read the body, verify the same detached CMS signature against the same
CA, parse the same plist, answer 200 with an empty body.
"""

from __future__ import annotations

import os


def mdm_app():
    from mdmserver.app import create_app

    return create_app()


def baseline_app():
    from flask import Flask, Response, request

    from mdmserver.pki import cms, x509
    from mdmserver.protocol.plist import load_dict

    with open(os.environ["BENCH_CA_FILE"], "rb") as handle:
        ca_cert = x509.cert_from_pem(handle.read())
    app = Flask("baseline")

    @app.put("/mdm/connect")
    def connect():
        import base64

        body = request.get_data()
        cms.verify_detached(base64.b64decode(request.headers["Mdm-Signature"]), body, ca_certs=[ca_cert])
        load_dict(body)
        return Response(b"", status=200)

    return app


def floor_parse_app():
    """Floor (a): read the body, ``plistlib.loads`` it, answer 200. Nothing of mdmserver."""
    import plistlib

    from flask import Flask, Response, request

    app = Flask("floor_parse")

    @app.put("/mdm/connect")
    def connect():
        plistlib.loads(request.get_data())
        return Response(b"", status=200)

    return app


def _der_children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, content end) of the DER elements in ``data[start:end]``."""
    out = []
    pos = start
    while pos < end:
        begin = pos
        tag = data[pos]
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            width = first & 0x7F
            length = int.from_bytes(data[pos:pos + width], "big")
            pos += width
        out.append((tag, begin, pos, pos + length))
        pos += length
    return out


def floor_verify_app():
    """Floor (b): (a) + base64 of ``Mdm-Signature`` + the two RSA-2048 verifies a signed request needs:
    the signer's signature over the signed attributes (after checking the body's SHA-256 is among them)
    and the CA's signature over the signer certificate, with ``cryptography`` directly. The DER walk is
    the least a verifier must do to find those bytes (definite-length DER, one signer, no checks)."""
    import base64
    import hashlib
    import plistlib

    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from flask import Flask, Response, request

    with open(os.environ["BENCH_CA_FILE"], "rb") as handle:
        ca_key = cx509.load_pem_x509_certificate(handle.read()).public_key()
    app = Flask("floor_verify")

    @app.put("/mdm/connect")
    def connect():
        body = request.get_data()
        der = base64.b64decode(request.headers["Mdm-Signature"])
        (_, _, s, e), = _der_children(der, 0, len(der))  # ContentInfo
        _oid, (_, _, s, e) = _der_children(der, s, e)  # contentType, [0] EXPLICIT
        (_, _, s, e), = _der_children(der, s, e)  # SignedData
        parts = _der_children(der, s, e)
        certs = next(p for p in parts if p[0] == 0xA0)
        _, cert_start, _, cert_end = _der_children(der, certs[2], certs[3])[0]
        cert = cx509.load_der_x509_certificate(der[cert_start:cert_end])
        (_, _, s, e), = _der_children(der, parts[-1][2], parts[-1][3])  # the one SignerInfo
        signer = _der_children(der, s, e)
        attrs = next(p for p in signer if p[0] == 0xA0)
        signature = next(p for p in signer if p[0] == 0x04)
        if hashlib.sha256(body).digest() not in der[attrs[2]:attrs[3]]:
            return Response(b"", status=403)
        signed = b"\x31" + der[attrs[1] + 1:attrs[3]]
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                      cert.signature_hash_algorithm)
        cert.public_key().verify(der[signature[2]:signature[3]], signed, padding.PKCS1v15(), hashes.SHA256())
        plistlib.loads(body)
        return Response(b"", status=200)

    return app
