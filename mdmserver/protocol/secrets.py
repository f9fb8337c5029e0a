"""The one secrets policy: which values of profiles, command parameters and command results are secrets.

Pure module (no Flask, no SQLAlchemy). Profiles, commands, actions, inventory and the payload-model
generator all ask it; nothing else keeps its own list.

A key is secret when

1. Apple's schema says so. ``tools/gen_secret_keys.py`` applies :func:`schema_says_secret` to every
   key of every payload, command and check-in message of the schema digest and writes
   ``secret_keys.json`` next to this module: the payload types' top-level secret keys, and the key
   names that are secret wherever the schema uses them (a name the schema also uses for a
   non-secret string or data value, such as ``Certificate`` or ``PayloadContent``, is secret only
   in the payload types where the schema says so).
2. Or its name says so, for keys the schema does not know (vendor keys, newer keys, app
   configurations): :func:`is_secret_name` (the last word is a secret noun, or a secret phrase ends
   the name; the schema rule uses it too) or, more broadly, :func:`names_a_secret`: a secret word
   is one of the name's words anywhere (``MyOddSecretToken``, ``SecretValue``, ``PINCode``), unless
   a word after it says the key *describes* the secret (``PasswordHint``, ``PasscodeType``,
   ``OAuthTokenRequestURL``: :data:`DESCRIPTOR_WORDS`). Key names the schema knows and never marks
   secret (``PasscodeLockGracePeriod``, ``PasscodePresent``, ``TokenData``, the push ``Token``)
   are not secrets by that broader rule: the generator lists those it would catch
   (``not_secret_names``), of any type, since a device may send a flag's key with a string.

A boolean is never a secret (``HasRemovalPasscode``, ``forcePIN``, ``PasswordVerified`` are flags).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cache, lru_cache
from importlib import resources
from typing import Any

#: What JSON shows instead of a secret value to a caller without the ``secrets`` scope.
REDACTED = "[redacted]"

#: Last words of a key name that make it a secret (``CalDAVPassword``, ``NewPIN``, ``PSK``...).
SECRET_LAST_WORDS = frozenset({
    "password", "passwd", "passphrase", "passcode", "pin", "psk", "secret", "challenge", "credential",
    "credentials",
})

#: Word sequences that make a key secret when they end its name (or are followed only by one of
#: ``PHRASE_SUFFIXES``: ``PrivateKeyExport``, ``FDE_PersonalRecoveryKeyCMS``, ``…RecoveryKeyDeviceKey``).
SECRET_PHRASES: tuple[tuple[str, ...], ...] = (
    ("private", "key"), ("recovery", "key"), ("bypass", "code"), ("shared", "secret"), ("pre", "shared", "key"),
    ("preshared", "key"), ("password", "hash"), ("unlock", "token"), ("bootstrap", "token"),
    ("registration", "token"), ("security", "token"), ("access", "token"), ("refresh", "token"),
    ("auth", "token"), ("bearer", "token"), ("api", "key"), ("secret", "key"), ("client", "secret"),
)

#: Request types whose parameters always carry secrets: InstallProfile's ``Payload`` is a whole
#: configuration profile, which may hold any of the secrets above (passwords, PKCS#12 identities).
SECRET_PARAMETERS: dict[str, frozenset[str]] = {
    "InstallProfile": frozenset({"Payload"}),
}

PHRASE_SUFFIXES = frozenset({"cms", "data", "export", "blob", "device", "key"})

#: Words that make a key secret wherever they stand in its name (:func:`names_a_secret`); ``key``
#: alone is too common (``KeyType``, ``PayloadKey``, ``KeySize``): it counts only in a phrase.
SECRET_WORDS = SECRET_LAST_WORDS | {"passwords", "passcodes", "pins", "secrets", "token", "tokens"}

#: Words that, after the secret word, make the key describe the secret rather than hold it: a
#: password hint is shown on the login screen by design, a URL names where a token is fetched.
DESCRIPTOR_WORDS = frozenset({
    "hint", "hints", "url", "urls", "uri", "policy", "policies", "regex", "format", "description", "type",
    "types", "kind", "status", "length", "age", "history", "mode", "source", "encryption", "prompt",
    "label", "title", "name", "names", "id", "uuid", "identifier", "required", "enabled", "allowed",
})

#: Word pairs that name something public though they hold a secret word: the APNs push token is an
#: address, not a credential (the server stores it in clear and shows whether it has one).
PUBLIC_PHRASES: tuple[tuple[str, ...], ...] = (("push", "token"),)

_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z]|[0-9]|\b|_|$)|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

# --- the schema rule (used by tools/gen_secret_keys.py) ---------------------------------------------

_DESC_SECRET = re.compile(r"pre-?shared secret|shared secret\b|password hash", re.IGNORECASE)
_DESC_PKCS12 = re.compile(r"\.p12\b|pkcs ?#? ?12", re.IGNORECASE)
_TITLE_SECRET = re.compile(r"(password|passphrase|\bpin|shared ?secret)$", re.IGNORECASE)
_SECRET_TYPES = frozenset({"string", "data", "any"})


def words(name: str) -> list[str]:
    """A key name split into lower-case words (``HTTPProxyPassword`` → http, proxy, password)."""
    return [w.lower() for w in _WORDS.findall(name)]


@lru_cache(maxsize=8192)
def is_secret_name(name: str) -> bool:
    """The name rule: the key's last word is a secret noun, or its name holds a secret phrase."""
    parts = words(name)
    if not parts:
        return False
    if parts[-1] in SECRET_LAST_WORDS:
        return True
    for phrase in SECRET_PHRASES:
        n = len(phrase)
        for i in range(len(parts) - n + 1):
            if tuple(parts[i : i + n]) == phrase and all(w in PHRASE_SUFFIXES for w in parts[i + n :]):
                return True
    return False


@lru_cache(maxsize=8192)
def names_a_secret(name: str) -> bool:
    """The broader name rule, for names the schema does not know: a secret word (or phrase) is one
    of the name's words anywhere, and no word after the last one is a descriptor
    (:data:`DESCRIPTOR_WORDS`): ``MyOddSecretToken``, ``SecretValue``, ``AdminPINCode`` and
    ``PrivateKeyPEM`` are secrets; ``PasswordHint``, ``PasswordPolicyURL`` and ``PushToken`` are not.
    """
    parts = words(name)
    last = None
    for i, word in enumerate(parts):
        if word in SECRET_WORDS and not _in_phrase(parts, i, PUBLIC_PHRASES):
            last = i
    for phrase in SECRET_PHRASES:
        n = len(phrase)
        for i in range(len(parts) - n + 1):
            if tuple(parts[i : i + n]) == phrase and (last is None or i + n - 1 > last):
                last = i + n - 1
    if last is None:
        return False
    return not any(word in DESCRIPTOR_WORDS for word in parts[last + 1 :])


def _in_phrase(parts: list[str], index: int, phrases: tuple[tuple[str, ...], ...]) -> bool:
    """Whether the word at ``index`` belongs to one of ``phrases`` in ``parts``."""
    for phrase in phrases:
        n = len(phrase)
        for start in range(max(0, index - n + 1), min(index, len(parts) - n) + 1):
            if tuple(parts[start : start + n]) == phrase:
                return True
    return False


def schema_says_secret(key: dict[str, Any], owner: dict[str, Any] | None = None) -> bool:
    """Whether a key entry of Apple's schema digest describes a secret.

    Only string and data values (and untyped ones) can be secrets. The schema says so by the key's
    name (the name rule), its title (``Account Password``, ``Shared Secret``, ``Prompt for PIN`` is a
    boolean), its description (a ``.p12`` identity, a preshared secret, a recovery key) or, for
    ``PayloadContent``, the payload type being a PKCS#12 identity (data described as a ``.p12`` is one
    too).
    """
    if key.get("type") not in _SECRET_TYPES or key.get("key") == "ANY":
        return False
    name = str(key.get("key", ""))
    if is_secret_name(name):
        return True
    if _TITLE_SECRET.search(str(key.get("title") or "")):
        return True
    desc = str(key.get("desc") or "")
    if _DESC_SECRET.search(desc) or key.get("type") == "data" and _DESC_PKCS12.search(desc):
        return True
    if owner is not None and name == "PayloadContent" and key.get("type") == "data":
        about = f"{owner.get('title') or ''} {owner.get('payload_type') or ''}"
        return bool(re.search(r"pkcs ?#? ?12", about, re.IGNORECASE))
    return False


# --- the runtime decision ------------------------------------------------------------------------------


@cache
def _table() -> dict[str, Any]:
    text = resources.files("mdmserver.protocol").joinpath("secret_keys.json").read_text(encoding="utf-8")
    return json.loads(text)


@cache
def schema_secret_names() -> frozenset[str]:
    """Key names the schema marks secret wherever they appear."""
    return frozenset(_table()["names"])


@cache
def schema_public_names() -> frozenset[str]:
    """Key names the schema knows and never marks secret although :func:`names_a_secret` would."""
    return frozenset(_table()["not_secret_names"])


@cache
def _payload_secrets(payload_type: str) -> frozenset[str]:
    return frozenset(_table()["payloads"].get(payload_type, ()))


def is_secret(name: Any, value: Any = None, *, payload_type: Any = None) -> bool:
    """Whether the value of key ``name`` is a secret (``payload_type``: the dictionary is that payload)."""
    if not isinstance(name, str) or isinstance(value, bool):
        return False
    if isinstance(payload_type, str) and name in _payload_secrets(payload_type):
        return True
    if name in schema_secret_names() or is_secret_name(name):
        return True
    return name not in schema_public_names() and names_a_secret(name)


def is_secret_parameter(request_type: str | None, name: Any, value: Any = None) -> bool:
    """Whether a top-level command parameter (or result key) is a secret."""
    if request_type is not None and name in SECRET_PARAMETERS.get(request_type, ()):
        return True
    return is_secret(name, value)


def _children(value: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(value, dict):
        return value.items()
    if isinstance(value, list | tuple):
        return enumerate(value)
    return ()


def contains_secret(value: Any, *, request_type: str | None = None, max_nodes: int = 1_000_000) -> bool:
    """Whether a command's parameters or result (a plist tree) hold a secret anywhere.

    Shared containers are visited once; past ``max_nodes`` the tree counts as secret (seal it).
    """
    if isinstance(value, dict) and any(is_secret_parameter(request_type, k, v) for k, v in value.items()):
        return True
    seen: set[int] = set()
    stack = [value]
    nodes = 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        nodes += 1
        if nodes > max_nodes:
            return True
        for key, child in _children(item):
            if isinstance(item, dict) and is_secret(key, child):
                return True
            if isinstance(child, dict | list | tuple):
                stack.append(child)
    return False


def redact(value: Any, *, request_type: str | None = None, depth: int = 0) -> Any:
    """A copy of a plist tree with every secret value replaced by :data:`REDACTED`."""
    if depth > 128:
        return REDACTED
    if isinstance(value, dict):
        return {
            k: REDACTED if (is_secret_parameter(request_type, k, v) if depth == 0 else is_secret(k, v))
            else redact(v, depth=depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, depth=depth + 1) for v in value]
    return value


# --- URL query parameters (the access log) ----------------------------------------------------------

#: Words that make a query parameter secret wherever they occur in its name (``?secret=``,
#: ``?api_token=``): names in URLs are not plist keys, so this matches more loosely than the name rule.
QUERY_SECRET_WORDS = ("secret", "password", "token")


def is_secret_query_parameter(name: str) -> bool:
    """A URL query parameter whose value must not be logged: the name rule, or a secret word anywhere."""
    lowered = name.lower()
    return is_secret_name(name) or any(word in lowered for word in QUERY_SECRET_WORDS)
