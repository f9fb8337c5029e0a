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
