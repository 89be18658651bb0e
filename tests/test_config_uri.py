"""MONGODB_URI is read without DNS: database name, secrets and validation.

pymongo's parse_uri resolves SRV and TXT records for mongodb+srv://; configuration
must not, or every redaction does DNS lookups and a DNS outage silently switches
`mongodb+srv://host/mydb` to the default database.
"""

from __future__ import annotations

import socket
from typing import Any

import dns.resolver
import pytest

from wa_export.errors import ConfigError
from wa_export.redaction import redact
from wa_export.settings import load_settings

SRV_URI = "mongodb+srv://exporter:p%40ss%2Fw0rd@cluster0.example.test/mydb?retryWrites=true&w=majority"


@pytest.fixture
def dns_down(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every name lookup fails and is recorded."""
    calls: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise OSError("DNS is down")

    monkeypatch.setattr(dns.resolver, "resolve", refuse)
    monkeypatch.setattr(dns.resolver.Resolver, "resolve", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "gethostbyname", refuse)
    return calls


def _load(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, **env: str) -> Any:
    monkeypatch.chdir(tmp_path)  # no stray .env
    return load_settings(environ=env)


def test_srv_uri_database_and_password_without_dns(dns_down: list[Any], monkeypatch, tmp_path) -> None:
    settings = _load(monkeypatch, tmp_path, MONGODB_URI=SRV_URI)
    assert settings.mongodb_database == "mydb"  # not "whatsapp" because DNS failed
    for _ in range(100):  # every redaction: no lookup, the same answer
        assert "p@ss/w0rd" in settings.secrets()
    assert redact("auth failed for p%40ss%2Fw0rd / p@ss/w0rd", settings.secrets()) == "auth failed for *** / ***"
    assert "p@ss" not in repr(settings) and "p%40ss" not in repr(settings)
    assert dns_down == []


def test_database_precedence(dns_down: list[Any], monkeypatch, tmp_path) -> None:
    explicit = _load(monkeypatch, tmp_path, MONGODB_URI=SRV_URI, MONGODB_DATABASE="other")
    assert explicit.mongodb_database == "other"
    assert (
        _load(monkeypatch, tmp_path, MONGODB_URI="mongodb+srv://cluster0.example.test").mongodb_database == "whatsapp"
    )
    assert (
        _load(monkeypatch, tmp_path, MONGODB_URI="mongodb://h1:27017,h2:27017/%6Dy_db?replicaSet=rs0").mongodb_database
        == "my_db"
    )
    assert _load(monkeypatch, tmp_path, MONGODB_URI="mongodb://127.0.0.1/?tls=true").mongodb_database == "whatsapp"
    assert _load(monkeypatch, tmp_path, MONGODB_URI="mongodb://127.0.0.1/db.collection").mongodb_database == "db"
    assert dns_down == []


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb+srv://cluster0.example.test:27017/mydb",  # +srv takes no port
        "mongodb+srv://a.example.test,b.example.test/mydb",  # +srv takes one host
        "mongodb+srv://u:secret-value@/mydb",
        "mongodb://",
        "http://127.0.0.1/mydb",
        "mongodb://127.0.0.1/my db",
        "mongodb://h1,h2/?directConnection=true",
    ],
)
def test_invalid_uris_are_refused_without_dns(uri: str, dns_down: list[Any], monkeypatch, tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(monkeypatch, tmp_path, MONGODB_URI=uri)
    assert str(caught.value).startswith("MONGODB_URI is not a valid MongoDB connection string")
    assert "secret-value" not in str(caught.value)
    assert dns_down == []


def test_parse_mongodb_uri_parts() -> None:
    from wa_export.settings import parse_mongodb_uri

    parts = parse_mongodb_uri("mongodb://us%3Aer:pa%3Ass@127.0.0.1:27017,[::1]:27018/d%5Fb?authSource=admin")
    assert (parts.username, parts.password, parts.raw_password) == ("us:er", "pa:ss", "pa%3Ass")
    assert parts.database == "d_b"
    with pytest.raises(ValueError):
        parse_mongodb_uri("mongodb://127.0.0.1/d%24b")  # "$" is not allowed in a database name
    assert parse_mongodb_uri("mongodb+srv://cluster0.example.test").database is None  # accepted, no DNS asked
