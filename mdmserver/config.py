"""Configuration: built-in defaults, overridden by an optional TOML file, overridden by environment variables.

Every setting has one name. In the TOML file it is the lower-case name (``database_url``); in the environment
it is ``MDMSERVER_`` + the upper-case name (``MDMSERVER_DATABASE_URL``); in ``app.config`` it is the upper-case
name (``DATABASE_URL``).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mdmserver.errors import AppError
from mdmserver.protocol.plist import DEFAULT_MAX_BYTES


class ConfigError(AppError):
    """The configuration cannot be used; raised at start-up."""


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, not {value!r}")
        return text

    return parse


def _str_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def _networks(value: Any) -> list[str]:
    """IP addresses or CIDR networks, normalised (``10.0.0.1`` → ``10.0.0.1/32``)."""
    return [str(ipaddress.ip_network(part, strict=False)) for part in _str_list(value)]


#: Device-auth modes that read the client certificate a TLS proxy forwards in a header.
HEADER_AUTH_MODES = frozenset({"header", "both"})


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    doc: str


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "./var", str, "Folder for the SQLite database, the secret key and generated material."),
    Setting("database_url", None, str, "SQLAlchemy URL; default sqlite:///<data_dir>/mdmserver.db."),
    Setting("database_busy_timeout", 10.0, float,
            "SQLite: seconds a writer waits for the write lock before the request answers 503."),
    Setting("public_url", "http://127.0.0.1:8080", str, "Base URL written into enrollment profiles."),
    Setting("apns_url", "https://api.push.apple.com", str, "APNs provider API base URL."),
    Setting("apns_ca_file", None, str, "Extra CA bundle to trust for the APNs endpoint."),
    Setting("apns_expiration_seconds", 7 * 24 * 3600, int, "apns-expiration: seconds from now."),
    Setting("admission_policy", "manual", _choice("manual", "auto"), "New devices: manual (pending) or auto."),
    Setting("preauthorized", [], _str_list, "Serial numbers or UDIDs accepted on their first Authenticate."),
    Setting("device_auth", "signature", _choice("signature", "header", "both"), "How devices prove identity."),
    Setting("client_cert_header", None, str, "Header carrying the URL-escaped client PEM from a TLS proxy."),
    Setting("trusted_proxies", [], _networks,
            "Proxy addresses/CIDRs whose client-certificate and X-Forwarded-For headers are believed."),
    Setting("enrollment_secret", None, str, "If set, /mdm/enroll requires it as the HTTP Basic password."),
    Setting("identity_lifetime_days", 730.0, float,
            "Lifetime of the identity certificate each device gets at enrollment (and at each renewal)."),
    Setting("identity_renew_days", 30.0, float,
            "Renew a device's identity this many days before it expires (0: never renew)."),
    Setting("enroll_rate_limit", 30, int,
            "Enrollment requests (profiles and SCEP operations) per client address per minute (0: no limit)."),
    Setting("enrollment_identity", "scep", _choice("scep", "pkcs12"),
            "How an enrolling device gets its identity: scep (the device makes its key and asks /scep) or "
            "pkcs12 (the server makes the key and ships it in the profile)."),
    Setting("scep_challenge_ttl", 3600, int, "Seconds an enrollment profile's SCEP challenge stays redeemable."),
    Setting("scep_allow_des", False, _bool,
            "Accept SCEP requests encrypted with single DES (56-bit; only for clients that know nothing else)."),
    Setting("max_device_body_bytes", DEFAULT_MAX_BYTES, int, "Largest device request body (413 above)."),
    Setting("max_upload_bytes", 20 * 1024 * 1024, int, "Largest admin request body (413 above)."),
    Setting("max_app_package_size", 2 * 1024**3, int,
            "Largest app package (.ipa, .pkg) uploaded to /api/v1/apps/packages (413 above)."),
    Setting("retention_days", 90, int, "How long finished commands and push records are kept."),
    Setting("webhook_max_attempts", 8, int,
            "Webhook POSTs per delivery (timeouts, connection errors, 5xx, 429) before it is dead."),
    Setting("webhook_timeout", 10.0, float, "Seconds a webhook receiver has to answer (connect: at most 5)."),
    Setting("repush_after_hours", 24, int, "Push again devices with queued commands silent this long."),
    Setting("secret_key_file", None, str, "Key encrypting secrets at rest; default <data_dir>/secret.key."),
    Setting("profile_trust_file", None, str, "PEM bundle of extra trust roots for signed profile uploads."),
    Setting("log_level", "INFO", str, "Python logging level."),
    Setting("cors_origins", [], _str_list, "Origins allowed by CORS; empty turns CORS off."),
    Setting("organization_name", "mdmserver", str, "Organization name created by `mdmserver init`."),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


def load_config(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """Build the app.config mapping (upper-case keys) from defaults, TOML file and environment."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}

    config_file = environ.get("MDMSERVER_CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            file_values = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
        for key, value in file_values.items():
            if key not in _BY_NAME:
                raise ConfigError(f"unknown setting {key!r} in {path}")
            values[key] = _parse(key, value, str(path))

    for setting in SETTINGS:
        env_name = "MDMSERVER_" + setting.name.upper()
        if env_name in environ:
            values[setting.name] = _parse(setting.name, environ[env_name], env_name)

    for key, value in (overrides or {}).items():
        values[key.lower()] = value

    data_dir = Path(values["data_dir"]).resolve()
    values["data_dir"] = str(data_dir)
    if not values["database_url"]:
        values["database_url"] = f"sqlite:///{data_dir / 'mdmserver.db'}"
    if not values["secret_key_file"]:
        values["secret_key_file"] = str(data_dir / "secret.key")
    values["public_url"] = str(values["public_url"]).rstrip("/")
    _check_device_auth(values)

    config = {key.upper(): value for key, value in values.items()}
    config["SQLALCHEMY_DATABASE_URI"] = config["DATABASE_URL"]
    config["SQLALCHEMY_ENGINE_OPTIONS"] = _engine_options(config["DATABASE_URL"], config["DATABASE_BUSY_TIMEOUT"])
    config["MAX_CONTENT_LENGTH"] = max(config["MAX_DEVICE_BODY_BYTES"], config["MAX_UPLOAD_BYTES"])
    return config


#: Hosts a device never uses: a plain ``http://`` public URL on them is a local trial, not a deployment.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def public_url_warning(public_url: str) -> str | None:
    """Why ``public_url`` will not work with a real device (``None`` when it can): Apple devices only
    talk MDM to an ``https://`` URL whose certificate they trust."""
    parts = urlsplit(public_url)
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and (parts.hostname or "").lower() in LOCAL_HOSTS:
        return None
    return (
        f"public_url is {public_url!r}, not https://: enrollment profiles carry this URL and Apple devices "
        "refuse MDM over plain HTTP. Set MDMSERVER_PUBLIC_URL=https://<your host> and serve with "
        "--tls-cert/--tls-key or behind a TLS proxy (docs/deploy.md)"
    )


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite ``database_url`` (None for another database or an in-memory one)."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix) or ":memory:" in database_url:
        return None
    return Path(database_url[len(prefix):].split("?", 1)[0])


def _check_device_auth(values: Mapping[str, Any]) -> None:
    """Refuse to start when header device-auth could not be trusted (see docs/security.md)."""
    mode = values["device_auth"]
    if mode not in HEADER_AUTH_MODES:
        return
    if not values["client_cert_header"]:
        raise ConfigError(f"device_auth = {mode!r} needs client_cert_header (the header your TLS proxy sets)")
    if not values["trusted_proxies"]:
        raise ConfigError(
            f"device_auth = {mode!r} needs trusted_proxies: the client certificate header is believed only from "
            "those addresses (anyone else could put a device's public certificate in it)"
        )


def _parse(name: str, value: Any, origin: str) -> Any:
    setting = _BY_NAME[name]
    if value is None:
        return None
    try:
        return setting.parse(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {name}: {exc}") from exc


def _engine_options(url: str, busy_timeout: float) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # The driver's timeout is SQLite's busy_timeout: how long a writer waits for the write lock.
        # Last in, first out: a device request reads on one pooled connection outside any transaction,
        # then writes in its session's transaction, and should find the same connection again. Each SQLite
        # connection keeps its own page cache, which is stale once another connection has written: a
        # connection handed out in turn (first in, first out) re-reads its pages almost every time.
        # Measured on deliver-and-acknowledge: +12 % requests a second, -7 % CPU a request (docs/deploy.md).
        return {"connect_args": {"timeout": float(busy_timeout), "check_same_thread": False},
                "pool_use_lifo": True}
    # No pool_pre_ping (a round trip before every request's statements): a pooled connection that sat
    # idle is pinged before use instead (mdmserver.db._ping_if_idle); one in steady use is not. First in,
    # first out: last in, first out measured 15 % more CPU a quiet Idle on PostgreSQL (docs/deploy.md).
    return {}
