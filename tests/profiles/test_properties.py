"""Property-based round trips: random plist trees stored by the generic payload come back identical."""

from __future__ import annotations

import plistlib
import uuid
from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdmserver.profiles.plist import from_json, strict_equal, to_json

from .helpers import assert_same_plist, download, dumps, upload

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_scalars = st.one_of(
    _text,
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=24),
    st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(2099, 12, 31)),
)
_trees = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_text, children, max_size=4),
    ),
    max_leaves=25,
)


@given(_trees)
@settings(max_examples=300, deadline=None)
def test_json_form_is_lossless(tree):
    assert strict_equal(tree, from_json(to_json(tree)))


_RESERVED = {"PayloadType", "PayloadContent", "EncryptedPayloadContent", "PayloadIdentifier"}
_TOP_KEYS = st.one_of(
    _text, st.sampled_from(["PayloadVersion", "RemovalDate", "ConsentText", "DurationUntilRemoval", "PayloadScope",
                            "TargetDeviceType", "PayloadUUID", "PayloadRemovalDisallowed"]),
).filter(lambda k: k not in _RESERVED)
_TYPED = {
    "com.apple.wifi.managed": ["SSID_STR", "AutoJoin", "EAPClientConfiguration", "Password", "PayloadVersion"],
    "com.apple.mobiledevice.passwordpolicy": ["minLength", "allowSimple", "maxGracePeriod"],
    "com.apple.security.pkcs12": ["PayloadContent", "Password", "AllowAllAppsAccess"],
    "com.apple.applicationaccess": ["allowCamera", "ratingApps", "safariAcceptCookies"],
    "com.example.generic": [],
}


@st.composite
def _payloads(draw):
    payload_type = draw(st.sampled_from(sorted(_TYPED)))
    names = st.one_of(_text, st.sampled_from(_TYPED[payload_type] or ["x"])).filter(lambda k: k != "PayloadType")
    return {"PayloadType": payload_type, **draw(st.dictionaries(names, _trees, max_size=6))}


@given(st.dictionaries(_TOP_KEYS, _trees, max_size=5), st.lists(_payloads(), max_size=3), st.booleans())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_profiles_round_trip(client, auth, top, payloads, binary):
    """Random values under random and documented keys (so typed columns see every wrong type too)."""
    headers = auth("read", "write", "secrets")
    profile = {"PayloadIdentifier": f"com.example.prop.{uuid.uuid4().hex}", **top, "PayloadContent": payloads}
    try:
        data = dumps(profile, "binary" if binary else "xml")
    except (ValueError, TypeError, OverflowError):
        data = dumps(profile, "binary")  # XML cannot hold control characters
    expected = plistlib.loads(data)
    response = upload(client, headers, data)
    assert response.status_code == 201, response.get_data(as_text=True)[:500]
    got = download(client, headers, response.get_json()["data"]["id"])
    assert got.status_code == 200
    assert_same_plist(expected, plistlib.loads(got.data))


@given(st.dictionaries(_text.filter(lambda k: k not in _RESERVED), _trees, max_size=5))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_payloads_created_by_json_api_round_trip(client, auth, keys):
    """The JSON form is the API's shape for untyped values: what is POSTed is what the device gets."""
    headers = {**auth("read", "write", "secrets"), "Content-Type": "application/vnd.api+json"}
    identifier = f"com.example.json.{uuid.uuid4().hex}"
    payload = {"PayloadType": "com.example.generic", "PayloadIdentifier": f"{identifier}.p",
               "PayloadUUID": "U", "PayloadVersion": 1, **keys}
    document = {"data": {"type": "profiles", "attributes": {
        "PayloadIdentifier": identifier, "PayloadUUID": "P", "PayloadType": "Configuration",
        "PayloadVersion": 1, "PayloadContent": [to_json(payload)]}}}
    response = client.post("/api/v1/profiles", json=document, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)[:500]
    got = download(client, headers, response.get_json()["data"]["id"], format="binary")
    assert got.status_code == 200
    expected = {"PayloadIdentifier": identifier, "PayloadUUID": "P", "PayloadType": "Configuration",
                "PayloadVersion": 1, "PayloadContent": [payload]}
    assert_same_plist(expected, plistlib.loads(got.data))
