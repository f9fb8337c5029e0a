"""The SCEP endpoint's OpenAPI description (RFC 8894 operations on one path)."""

from __future__ import annotations

from mdmserver.api.apidoc import ApiDoc, Body, Reply

_OPERATION = ("GetCACaps (text/plain), GetCACert (application/x-x509-ca-cert, DER) or PKIOperation "
              "(application/x-pki-message: a CertRep)")

OPENAPI: dict[str, ApiDoc] = {
    "scep.scep_get": ApiDoc(reply=Reply.FILE, errors=(400, 413, 429), query={
        "operation": _OPERATION,
        "message": "PKIOperation by GET: the pkiMessage, base64",
    }),
    "scep.scep_post": ApiDoc(body_kind=Body.PKI_MESSAGE, reply=Reply.FILE, errors=(400, 413, 429),
                             query={"operation": "PKIOperation"}),
}
