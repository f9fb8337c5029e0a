"""The plist a device receives for a command (``commands.command_plist``): parameters stored in the clear
are rendered once per distinct parameters and request type, then only the command's UUID is written into
it; the bytes are exactly those of rendering the whole envelope, which the expected values here are made
with plistlib directly."""

from __future__ import annotations

import plistlib
import uuid
from datetime import datetime

import pytest

from mdmserver.commands import service as commands
from mdmserver.pki.secretbox import SecretBox

BOX = SecretBox(b"k" * 32)

PARAMETERS = [
    {},
    {"Message": "Lost <phone> & \"charger\"", "PhoneNumber": "+1 555 0100"},
    {"Payload": b"\x00\x01binary\xff", "Nested": {"List": [1, 2.5, True, "é"], "When": datetime(2030, 1, 2, 3, 4, 5)}},
    {"RequestType": "Overridden", "Identifier": "com.example.profile"},
]


def _expected(command_uuid: str, request_type: str, parameters: dict) -> bytes:
    """The envelope rendered by plistlib, the parameters in their stored order (plistlib stores keys sorted)."""
    parameters = plistlib.loads(plistlib.dumps(parameters, fmt=plistlib.FMT_XML))
    command = {"RequestType": request_type, **{k: v for k, v in parameters.items() if k != "RequestType"}}
    return plistlib.dumps({"CommandUUID": command_uuid, "Command": command}, fmt=plistlib.FMT_XML, sort_keys=False)


@pytest.mark.parametrize("parameters", PARAMETERS)
def test_the_plist_is_the_whole_envelope_rendered(parameters):
    stored = plistlib.dumps(parameters, fmt=plistlib.FMT_XML)
    for _ in range(2):  # rendered, then from the kept rendering
        command_uuid = str(uuid.uuid4()).upper()
        plist = commands.command_plist(command_uuid, "DeviceLock", stored, BOX)
        assert plist == _expected(command_uuid, "DeviceLock", parameters)
        assert plistlib.loads(plist)["CommandUUID"] == command_uuid


def test_commands_sharing_parameters_differ_only_in_their_uuid_and_request_type_counts():
    stored = plistlib.dumps({"Message": "same for all"}, fmt=plistlib.FMT_XML)
    first = commands.command_plist("AAAA-1", "EnableLostMode", stored, BOX)
    second = commands.command_plist("BBBB-2", "EnableLostMode", stored, BOX)
    other_type = commands.command_plist("AAAA-1", "DeviceLock", stored, BOX)
    assert first.replace(b"AAAA-1", b"BBBB-2") == second
    assert plistlib.loads(other_type)["Command"]["RequestType"] == "DeviceLock"


def test_a_uuid_that_needs_escaping_and_sealed_parameters_are_rendered_whole():
    stored = plistlib.dumps({"Message": "x"}, fmt=plistlib.FMT_XML)
    odd = "a<b&c"
    assert commands.command_plist(odd, "DeviceLock", stored, BOX) == _expected(odd, "DeviceLock", {"Message": "x"})
    secret = {"NewPassword": "hunter2"}
    sealed = commands.seal_blob(plistlib.dumps(secret, fmt=plistlib.FMT_XML), BOX, commands.PARAMETERS_CONTEXT)
    before = commands._envelope_tail.cache_info().currsize
    assert commands.command_plist("CCCC-3", "SetRecoveryLock", sealed, BOX) == _expected("CCCC-3", "SetRecoveryLock",
                                                                                          secret)
    assert commands._envelope_tail.cache_info().currsize == before  # a secret is never kept
