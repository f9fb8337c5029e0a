"""The secrets policy against Apple's schema: the expected answers are written here by hand or read
from the schema digest, never taken from the policy itself."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mdmserver.protocol.secrets import (
    REDACTED,
    contains_secret,
    is_secret,
    is_secret_parameter,
    redact,
)

ROOT = Path(__file__).resolve().parents[2]

#: (payload type, key) Apple documents as passwords, shared secrets or PKCS#12 identities.
SCHEMA_SECRETS = [
    ("com.apple.wifi.managed", "Password"),
    ("com.apple.wifi.managed", "ProxyPassword"),
    ("com.apple.wifi.managed", "UserPassword"),  # inside EAPClientConfiguration
    ("com.apple.proxy.http.global", "ProxyPassword"),
    ("com.apple.vpn.managed", "HTTPProxyPassword"),  # inside Proxies
    ("com.apple.vpn.managed", "XAuthPassword"),
    ("com.apple.vpn.managed", "SharedSecret"),
    ("com.apple.vpn.managed", "AuthPassword"),
    ("com.apple.vpn.managed", "Password"),
    ("com.apple.caldav.account", "CalDAVPassword"),
    ("com.apple.carddav.account", "CardDAVPassword"),
    ("com.apple.subscribedcalendar.account", "SubCalAccountPassword"),
    ("com.apple.ldap.account", "LDAPAccountPassword"),
    ("com.apple.eas.account", "CertificatePassword"),
    ("com.apple.eas.account", "Certificate"),  # the .p12 identity
    ("com.apple.eas.account", "Password"),
    ("com.apple.ews.account", "Password"),
    ("com.apple.loginwindow", "AutologinPassword"),
    ("com.apple.mail.managed", "IncomingPassword"),
    ("com.apple.mail.managed", "OutgoingPassword"),
    ("com.apple.jabber.account", "JabberPassword"),
    ("com.apple.AIM.account", "AIMPassword"),
    ("com.apple.security.pkcs12", "Password"),
    ("com.apple.security.pkcs12", "PayloadContent"),
    ("com.apple.security.scep", "Challenge"),
    ("com.apple.profileRemovalPassword", "RemovalPassword"),
    ("com.apple.xsan", "sharedSecret"),
    ("com.apple.airplay.security", "Password"),
    ("com.apple.webcontent-filter", "Password"),
    ("com.apple.DirectoryService.managed", "Password"),
    ("com.apple.MCX.FileVault2", "Password"),
    ("com.apple.extensiblesso", "RegistrationToken"),
    ("com.apple.apn.managed", "password"),
]

#: Keys that mention passwords or certificates but hold none.
SCHEMA_PUBLIC = [
    ("com.apple.vpn.managed", "XAuthPasswordEncryption", "Prompt"),
    ("com.apple.eas.account", "CertificateName", "Exchange identity"),
    ("com.apple.eas.account", "PayloadCertificateUUID", "A1B2"),
    ("com.apple.eas.account", "OAuthTokenRequestURL", "https://login.example.com/token"),
    ("com.apple.security.root", "PayloadContent", b"0\x82"),
    ("com.apple.security.pkcs1", "PayloadContent", b"0\x82"),
    ("com.apple.MCX.FileVault2", "Certificate", b"0\x82"),
    ("com.apple.mobiledevice.passwordpolicy", "pinHistory", 5),
    ("com.apple.mobiledevice.passwordpolicy", "maxPINAgeInDays", 30),
    ("com.apple.mobiledevice.passwordpolicy", "forcePIN", True),
    ("com.apple.applicationaccess", "allowPasswordAutoFill", False),
    ("com.apple.mail.managed", "OutgoingPasswordSameAsIncomingPassword", True),
    ("com.apple.extensiblesso", "pwReqText", "at least 12 characters"),
    ("com.apple.mobiledevice.passwordpolicy", "passwordContentRegex", "^.{12,}$"),
    ("Configuration", "HasRemovalPasscode", True),
    ("com.apple.wifi.managed", "SSID_STR", "Office"),
]

#: (request type, key) of command parameters and results Apple documents as secrets.
COMMAND_SECRETS = [
    ("DeviceLock", "PIN"), ("EraseDevice", "PIN"), ("SetFirmwarePassword", "NewPassword"),
    ("SetFirmwarePassword", "CurrentPassword"), ("VerifyFirmwarePassword", "Password"),
    ("SetRecoveryLock", "NewPassword"), ("SetRecoveryLock", "CurrentPassword"), ("VerifyRecoveryLock", "Password"),
    ("ClearPasscode", "UnlockToken"), ("RequestUnlockToken", "UnlockToken"),
    ("ActivationLockBypassCode", "ActivationLockBypassCode"), ("SecurityInfo", "FDE_PersonalRecoveryKeyCMS"),
    ("SecurityInfo", "FDE_PersonalRecoveryKeyDeviceKey"), ("RotateFileVaultKey", "EncryptedNewRecoveryKey"),
    ("RotateFileVaultKey", "PrivateKeyExport"), ("RotateFileVaultKey", "PrivateKeyExportPassword"),
    ("SetAutoAdminPassword", "passwordHash"), ("RequestMirroring", "Password"),
    ("InstallProfile", "Payload"),
]

COMMAND_PUBLIC = [
    ("DeviceLock", "Message", "Call IT"), ("SecurityInfo", "PasscodePresent", True),
    ("VerifyFirmwarePassword", "PasswordVerified", True), ("SecurityInfo", "FDE_HasPersonalRecoveryKey", True),
    ("DeviceInformation", "PINRequiredForDeviceLock", True), ("RemoveProfile", "Identifier", "com.example"),
    ("RotateFileVaultKey", "KeyType", "personal"),
]


@pytest.mark.parametrize(("payload_type", "key"), SCHEMA_SECRETS)
def test_schema_secrets_of_payloads_are_secret(payload_type, key):
    assert is_secret(key, "marker", payload_type=payload_type)


@pytest.mark.parametrize(("payload_type", "key", "value"), SCHEMA_PUBLIC)
def test_keys_that_only_mention_secrets_are_not_secret(payload_type, key, value):
    assert not is_secret(key, value, payload_type=payload_type)


@pytest.mark.parametrize(("request_type", "key"), COMMAND_SECRETS)
def test_command_secrets_are_secret(request_type, key):
    assert is_secret_parameter(request_type, key, "marker")
    assert contains_secret({key: "marker"}, request_type=request_type)


@pytest.mark.parametrize(("request_type", "key", "value"), COMMAND_PUBLIC)
def test_command_flags_and_texts_are_not_secret(request_type, key, value):
    assert not is_secret_parameter(request_type, key, value)


@pytest.mark.parametrize("name", [
    "VendorPassword", "AppSecret", "WiFiPSK", "RouterPassphrase", "AdminPIN", "OldPIN", "Credential",
    "vendor_api_key", "ServiceClientSecret", "oauth_refresh_token", "MyPreSharedKey",
])
def test_the_name_rule_covers_keys_the_schema_does_not_know(name):
    assert is_secret(name, "marker")


@pytest.mark.parametrize("name", ["Pinned", "Spinner", "PinningEnabled", "TokenCard", "PushToken", "Secretary",
                                  "PasswordPolicyURL", "ShowPasswordHint"])
def test_the_name_rule_does_not_catch_lookalikes(name):
    assert not is_secret(name, "value")


@pytest.mark.parametrize("name", [
    "MyOddSecretToken", "SecretValue", "SecretText", "AdminPINCode", "PasswordForAdmin", "PasscodeValue",
    "ApiTokenValue", "vendor_token", "TokenValue", "PrivateKeyPEM", "RecoveryKeyString", "UserPasswords",
    "CredentialBlob", "PSKValue", "secret", "wifi_password_value",
])
def test_a_secret_word_anywhere_in_an_unknown_name_is_secret(name):
    """Review of issue 9, "name rule gaps": the secret word need not be the last one."""
    assert is_secret(name, "marker")
    assert contains_secret({"Settings": [{name: "marker"}]})
    assert redact({"Settings": [{name: "marker"}]}) == {"Settings": [{name: REDACTED}]}


@pytest.mark.parametrize("name", [
    # decided: a password hint is shown on the login window by design, it is not the password
    "PasswordHint", "PasswordHintText", "AdminPasswordHint",
    # words after the secret word that say the key describes it
    "TokenRefreshURL", "SecretName", "PasswordMinLength", "PasscodeType", "PINPolicy", "PasswordFormat",
    "TokenEncryption", "CredentialSource", "PasswordPromptTitle", "SecretUUID",
    # the APNs push token is an address, stored and shown in clear
    "DevicePushToken", "PushTokenData",
])
def test_names_that_describe_a_secret_are_not_secret(name):
    assert not is_secret(name, "value")


#: keys Apple's schema knows for non-secret, non-boolean values although they hold a secret word
#: (read from summary.json by hand: a grace period in seconds, the TokenUpdate push token, a
#: CryptoTokenKit token's data, an integer action, a domain list)
SCHEMA_KNOWN_PUBLIC = [
    ("PasscodeLockGracePeriod", 300), ("PasscodeLockGracePeriodEnforced", 60), ("Token", b"apns"),
    ("TokenData", b"ctk"), ("TokenParameters", {"x": 1}), ("tokenRemovalAction", 1), ("askForPasswordDelay", 5),
    ("SafariPasswordAutoFillDomains", ["example.com"]), ("TokenToUserMapping", {"UPN": "x"}),
]


@pytest.mark.parametrize(("name", "value"), SCHEMA_KNOWN_PUBLIC)
def test_names_the_schema_knows_as_public_are_not_secret(name, value, conformance_dir):
    summary = json.loads((conformance_dir / "apple-schema" / "summary.json").read_text())
    documented = [key for _owner, key in _all_schema_keys(summary) if key["key"] == name]
    assert documented and all(key["type"] != "boolean" for key in documented)  # the schema knows it
    assert not is_secret(name, value)
    assert not contains_secret({"Settings": {name: value}})


@pytest.mark.parametrize("name", ["PasscodePresent", "PasswordVerified", "HasSecureToken", "PINRequiredForDeviceLock",
                                  "allowPasswordSharing", "PasswordChanged"])
def test_schema_flags_sent_with_a_string_are_not_secret(name, conformance_dir):
    """A device may send a flag's key with the wrong type ("PasscodePresent": "yes"); the schema
    knows the key as a flag, so the value is not a secret whatever its type."""
    summary = json.loads((conformance_dir / "apple-schema" / "summary.json").read_text())
    assert {key["type"] for _owner, key in _all_schema_keys(summary) if key["key"] == name} == {"boolean"}
    assert not is_secret(name, "yes")


def _all_schema_keys(summary):
    yield from _schema_keys(summary)
    for entry in summary["checkin"]:
        for key in (entry.get("keys") or []) + (entry.get("response_keys") or []):
            yield entry["message_type"], key


def _schema_keys(summary):
    for entry in summary["payloads"]:
        for key in entry["keys"]:
            yield entry["payload_type"], key
    for entry in summary["commands"]:
        for key in entry["request_keys"] + entry["response_keys"]:
            yield entry["request_type"], key


def test_every_schema_password_and_no_schema_flag_is_secret(conformance_dir):
    """Read from the schema itself: every string or data key titled or named a password, passphrase
    or shared secret is secret where it is documented; no boolean, integer or date ever is."""
    summary = json.loads((conformance_dir / "apple-schema" / "summary.json").read_text())
    missed, wrong = [], []
    for owner, key in _schema_keys(summary):
        name, title = key["key"], (key.get("title") or "")
        sample = {"string": "marker", "data": b"marker", "boolean": True, "integer": 1, "real": 1.0}.get(key["type"])
        secretive = any(w in (name + " " + title).lower() for w in ("password", "passphrase", "shared secret",
                                                                      "sharedsecret"))
        if key["type"] in ("string", "data") and secretive and not name.endswith(("Encryption", "URL", "Text", "Regex")):
            if not is_secret(name, sample, payload_type=owner):
                missed.append((owner, key["path"]))
        if key["type"] in ("boolean", "integer", "real", "date") and is_secret(name, sample, payload_type=owner):
            wrong.append((owner, key["path"]))
    assert not missed, missed
    assert not wrong, wrong


def test_checked_in_secret_table_matches_the_generator(conformance_dir):
    spec = importlib.util.spec_from_file_location("gen_secrets", ROOT / "tools" / "gen_secret_keys.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    summary = json.loads((conformance_dir / "apple-schema" / "summary.json").read_text())
    checked_in = json.loads((ROOT / "mdmserver" / "protocol" / "secret_keys.json").read_text())
    assert checked_in == gen.secret_table(summary)


def test_redact_replaces_secret_values_at_any_depth():
    value = {"Message": "hi", "PIN": "123456",
             "Nested": [{"Password": "p", "Name": "n"}, {"Deeper": {"SharedSecret": b"s"}}]}
    assert redact(value) == {"Message": "hi", "PIN": REDACTED,
                             "Nested": [{"Password": REDACTED, "Name": "n"}, {"Deeper": {"SharedSecret": REDACTED}}]}
    assert redact({"Payload": b"profile"}, request_type="InstallProfile") == {"Payload": REDACTED}
    assert not contains_secret({"Queries": ["DeviceName"], "Flag": {"PasswordVerified": True}})
