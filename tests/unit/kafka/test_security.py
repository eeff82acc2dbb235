"""Kafka security settings: what a service accepts, what stops it at start (naming the setting),
what reaches librdkafka, and that the password is never printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from openlfr.kafka.security import KafkaConnection, KafkaSecurityError, client_config
from openlfr.service.settings import ServiceSettings, load_settings, settings_error_lines

PASSWORD = "s3cret-Pa55word-nobody-prints"
PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "ca.pem").write_text(PEM)
    (tmp_path / "client.pem").write_text(PEM)
    (tmp_path / "client.key").write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    (tmp_path / "password").write_text(PASSWORD + "\n")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "not-a-cert.pem").write_text("hello\n")
    return {p.name.replace(".", "_").replace("-", "_"): str(p) for p in tmp_path.iterdir()} | {"missing": str(tmp_path / "missing")}


def _errors(env: dict[str, str]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        ServiceSettings(bootstrap="kafka:9093", **env)
    return settings_error_lines(info.value)


@pytest.mark.parametrize(
    ("env", "variable", "reason"),
    [
        ({"kafka_security_protocol": "SASL_SSL", "kafka_password": PASSWORD}, "OPENLFR_KAFKA_USERNAME",
         "required with OPENLFR_KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_username": "openlfr-detect"}, "OPENLFR_KAFKA_PASSWORD_FILE",
         "OPENLFR_KAFKA_PASSWORD or OPENLFR_KAFKA_PASSWORD_FILE is required"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_username": "openlfr-detect", "kafka_password": ""},
         "OPENLFR_KAFKA_PASSWORD", "is empty"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_username": "open lfr", "kafka_password": PASSWORD},
         "OPENLFR_KAFKA_USERNAME", "may only hold"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "OPENLFR_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN", "kafka_username": "u",
          "kafka_password": PASSWORD}, "OPENLFR_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        # Credentials on a plain connection: refused, not ignored.
        ({"kafka_username": "openlfr-detect"}, "OPENLFR_KAFKA_USERNAME", "not PLAINTEXT"),
        ({"kafka_password": PASSWORD}, "OPENLFR_KAFKA_PASSWORD", "not PLAINTEXT"),
        ({"kafka_security_protocol": "SSL", "kafka_username": "u"}, "OPENLFR_KAFKA_USERNAME", "not SSL"),
        ({"kafka_ca_file": "{ca_pem}"}, "OPENLFR_KAFKA_CA_FILE", "not PLAINTEXT"),
    ],
)
def test_a_bad_combination_names_the_setting(env: dict[str, str], variable: str, reason: str, files: dict) -> None:
    env = {k: v.format(**files) for k, v in env.items()}
    lines = _errors(env)
    assert any(line.startswith(f"bad setting {variable}:") and reason in line for line in lines), lines
    assert not any(PASSWORD in line for line in lines)


@pytest.mark.parametrize(
    ("env", "variable", "reason"),
    [
        ({"kafka_password_file": "{missing}"}, "OPENLFR_KAFKA_PASSWORD_FILE", "cannot read"),
        ({"kafka_password_file": "{empty}"}, "OPENLFR_KAFKA_PASSWORD_FILE", "is empty"),
        ({"kafka_password_file": "{password}", "kafka_password": PASSWORD}, "OPENLFR_KAFKA_PASSWORD_FILE", "not both"),
        ({"kafka_password_file": "{password}", "kafka_ca_file": "{missing}"}, "OPENLFR_KAFKA_CA_FILE", "cannot read"),
        ({"kafka_password_file": "{password}", "kafka_ca_file": "{not_a_cert_pem}"}, "OPENLFR_KAFKA_CA_FILE",
         "no PEM certificate"),
        ({"kafka_password_file": "{password}", "kafka_cert_file": "{client_pem}"}, "OPENLFR_KAFKA_KEY_FILE",
         "give both or neither"),
    ],
)
def test_unusable_files_name_the_setting(env: dict[str, str], variable: str, reason: str, files: dict) -> None:
    base = {"kafka_security_protocol": "SASL_SSL", "kafka_username": "openlfr-detect"}
    lines = _errors(base | {k: v.format(**files) for k, v in env.items()})
    assert any(line.startswith(f"bad setting {variable}:") and reason in line for line in lines), lines


def test_a_service_with_a_bad_combination_exits_2_naming_it(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("OPENLFR_BOOTSTRAP", "kafka:9093")
    monkeypatch.setenv("OPENLFR_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("OPENLFR_KAFKA_PASSWORD", PASSWORD)
    with pytest.raises(SystemExit) as info:
        load_settings(ServiceSettings)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "bad setting OPENLFR_KAFKA_USERNAME: " in err and PASSWORD not in err


def test_sasl_ssl_settings_reach_librdkafka_and_the_password_is_never_printed(files: dict) -> None:
    settings = ServiceSettings(
        bootstrap="kafka:9093", kafka_security_protocol="SASL_SSL", kafka_username="openlfr-detect",
        kafka_password_file=files["password"], kafka_ca_file=files["ca_pem"],
    )
    connection = settings.kafka_connection()
    assert client_config(connection) == {
        "bootstrap.servers": "kafka:9093",
        "security.protocol": "SASL_SSL",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": files["ca_pem"],
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "openlfr-detect",
        "sasl.password": PASSWORD,  # the file's first line, without its line end
    }
    assert str(connection) == "kafka:9093"  # what log lines and errors print
    for text in (repr(connection), repr(settings), str(settings), f"{connection}", str(settings.model_dump())):
        assert PASSWORD not in text


def test_ssl_with_a_client_certificate(files: dict) -> None:
    connection = ServiceSettings(
        bootstrap="kafka:9093", kafka_security_protocol="SSL", kafka_ca_file=files["ca_pem"],
        kafka_cert_file=files["client_pem"], kafka_key_file=files["client_key"],
    ).kafka_connection()
    config = client_config(connection)
    assert config["security.protocol"] == "SSL" and "sasl.username" not in config
    assert config["ssl.certificate.location"] == files["client_pem"]
    assert config["ssl.key.location"] == files["client_key"]


def test_plaintext_is_the_default_and_a_bootstrap_string_stays_plain() -> None:
    assert client_config(ServiceSettings(bootstrap="kafka:9092").kafka_connection()) == {"bootstrap.servers": "kafka:9092"}
    assert client_config("127.0.0.1:9092") == {"bootstrap.servers": "127.0.0.1:9092"}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"security_protocol": "SASL_SSL", "password": SecretStr(PASSWORD)}, "username is required"),
        ({"security_protocol": "SASL_SSL", "username": "u"}, "password is required"),
        ({"username": "u", "password": SecretStr(PASSWORD)}, "only with security_protocol=SASL_SSL"),
        ({"security_protocol": "SASL_PLAINTEXT"}, "expected one of"),
    ],
)
def test_a_connection_made_in_code_is_checked_too(kwargs: dict, reason: str) -> None:
    with pytest.raises(KafkaSecurityError, match=reason):
        KafkaConnection(bootstrap="kafka:9093", **kwargs)
