"""MONGODB_URI read without any network access: pymongo's parse_uri resolves SRV and TXT records for
``mongodb+srv://``, so every redaction would do DNS lookups, and a DNS outage would switch the database."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

from pymongo.uri_parser import parse_userinfo, split_hosts, split_options

DEFAULT_MONGODB_URI = "mongodb://localhost:27017"


@dataclass(frozen=True)
class MongoUriParts:
    srv: bool
    username: str | None
    password: str | None  # URL-decoded
    raw_password: str | None  # as written in the URI
    database: str | None  # URL-decoded, without a ".collection" suffix


def parse_mongodb_uri(uri: str) -> MongoUriParts:
    """``scheme://[userinfo@]hosts[/database][?options]`` by pymongo's pure helpers and rules; ValueError (or
    pymongo's ConfigurationError) on a malformed URI."""
    scheme, _, rest = uri.partition("://")
    if scheme not in ("mongodb", "mongodb+srv"):
        raise ValueError("the URI must begin with mongodb:// or mongodb+srv://")
    srv = scheme == "mongodb+srv"
    if not rest:
        raise ValueError("no host")
    host_and_db, _, options = rest.partition("?")
    host_part, _, database = host_and_db.partition("/")
    userinfo, at, hosts = host_part.rpartition("@")
    username, password = parse_userinfo(userinfo) if at else (None, None)
    if "/" in hosts or not hosts:
        raise ValueError("no host")
    opts = split_options(options, validate=True, warn=True, normalize=True) if options else {}
    if srv:
        nodes = split_hosts(hosts, default_port=None)
        if len(nodes) != 1 or nodes[0][1] is not None:
            raise ValueError("mongodb+srv:// takes exactly one host name and no port")
        if opts.get("directconnection"):
            raise ValueError("directConnection=true cannot be used with mongodb+srv://")
    else:
        nodes = split_hosts(hosts)
    # The option combinations pymongo's parse_uri refuses (its _check_options).
    if len(nodes) > 1 and opts.get("directconnection"):
        raise ValueError("directConnection=true needs a single host")
    if opts.get("loadbalanced") and (len(nodes) > 1 or opts.get("directconnection") or opts.get("replicaset")):
        raise ValueError("loadBalanced=true needs a single host, no directConnection and no replicaSet")
    name = unquote_plus(database).split(".", 1)[0] if database else ""
    if re.search(r'[/ "$]', name):
        raise ValueError("bad database name")
    return MongoUriParts(srv, username, password or None, userinfo.partition(":")[2] or None, name or None)


def uri_secrets(uri: str) -> list[str]:
    """The MongoDB password in MONGODB_URI, decoded and as written; tolerant of a malformed URI."""
    try:
        parts = parse_mongodb_uri(uri)
        return [parts.password or "", parts.raw_password or ""]
    except Exception:
        # Malformed, often because the password holds an unencoded "@" or "/":
        # everything between the first ":" and the last "@" is the password then.
        _scheme, separator, rest = uri.partition("://")
        if not separator or "@" not in rest:
            return []
        raw = rest.rpartition("@")[0].partition(":")[2]
        return [raw, unquote_plus(raw)] if raw else []


def userinfo_needs_encoding(uri: str) -> bool:
    """Whether the part before the last "@" holds characters a URI's user info must percent-encode."""
    rest = uri.partition("://")[2]
    if "@" not in rest:
        return False
    userinfo = rest.rpartition("@")[0]
    bad_percent = re.search(r"%(?![0-9A-Fa-f]{2})", userinfo) is not None
    return bool(re.search(r"[@/?#\[\]]", userinfo)) or userinfo.count(":") > 1 or bad_percent
