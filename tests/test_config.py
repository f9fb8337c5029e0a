from __future__ import annotations

import pytest

from mdmserver.config import SETTINGS, ConfigError, load_config


def test_defaults(tmp_path):
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path)})
    assert config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'mdmserver.db'}"
    assert config["PUBLIC_URL"] == "http://127.0.0.1:8080"
    assert config["ADMISSION_POLICY"] == "manual"
    assert config["DEVICE_AUTH"] == "signature"
    assert config["SECRET_KEY_FILE"] == str(tmp_path / "secret.key")


def test_environment_overrides_file(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('public_url = "https://file.example.com/"\nadmission_policy = "auto"\nretention_days = 30\n')
    config = load_config(environ={"MDMSERVER_CONFIG": str(file), "MDMSERVER_PUBLIC_URL": "https://env.example.com"})
    assert config["PUBLIC_URL"] == "https://env.example.com"
    assert config["ADMISSION_POLICY"] == "auto"
    assert config["RETENTION_DAYS"] == 30


@pytest.mark.parametrize(
    "environ",
    [
        {"MDMSERVER_ADMISSION_POLICY": "sometimes"},
        {"MDMSERVER_DEVICE_AUTH": "magic"},
        {"MDMSERVER_RETENTION_DAYS": "ninety"},
    ],
)
def test_bad_values_are_refused(environ):
    with pytest.raises(ConfigError):
        load_config(environ=environ)


def test_unknown_file_key_is_refused(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="colour"):
        load_config(environ={"MDMSERVER_CONFIG": str(file)})


def test_example_file_documents_every_setting():
    from pathlib import Path

    example = (Path(__file__).resolve().parents[1] / "config" / "mdmserver.example.toml").read_text()
    for setting in SETTINGS:
        assert setting.name in example, setting.name
    load_config(environ={"MDMSERVER_CONFIG": str(Path(__file__).resolve().parents[1] / "config" /
                                                    "mdmserver.example.toml")})


@pytest.mark.parametrize("mode", ["header", "both"])
def test_header_device_auth_needs_trusted_proxies(mode):
    base = {"MDMSERVER_DEVICE_AUTH": mode, "MDMSERVER_CLIENT_CERT_HEADER": "X-Client-Cert"}
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_config(environ=base)
    with pytest.raises(ConfigError, match="client_cert_header"):
        load_config(environ={"MDMSERVER_DEVICE_AUTH": mode, "MDMSERVER_TRUSTED_PROXIES": "10.0.0.1"})
    config = load_config(environ={**base, "MDMSERVER_TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/24"})
    assert config["TRUSTED_PROXIES"] == ["10.0.0.1/32", "192.168.0.0/24"]


def test_trusted_proxies_must_be_addresses():
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_config(environ={"MDMSERVER_TRUSTED_PROXIES": "proxy.example.com"})
    assert load_config(environ={})["TRUSTED_PROXIES"] == []
