"""Recipient addresses: the one syntax accepted and the EXPORT_ALLOWED_EMAIL_DOMAINS policy, for every command."""

from __future__ import annotations

import re
from collections.abc import Sequence

from wa_export.errors import ConfigError

# Deliberately strict (no spaces, no header-breaking characters): anything fancier is an operator typo, not a need.
EMAIL_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


def split_address_list(value: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A comma (or semicolon) separated list -> (valid addresses without repeats, invalid entries)."""
    entries = [address for raw in re.split(r"[,;]", value) if (address := raw.strip())]
    valid: dict[str, str] = {}  # lower case -> the first spelling
    for address in entries:
        if EMAIL_ADDRESS.match(address):
            valid.setdefault(address.lower(), address)
    return tuple(valid.values()), tuple(address for address in entries if not EMAIL_ADDRESS.match(address))


def parse_address_list(value: str, variable: str) -> tuple[str, ...]:
    """A comma (or semicolon) separated list of plain addresses; invalid ones raise ConfigError."""
    addresses, invalid = split_address_list(value)
    if invalid:
        raise ConfigError(
            f"{variable} contains an invalid email address {invalid[0]!r}: "
            "use plain addresses separated by commas, e.g. a@example.com,b@example.com."
        )
    return addresses


def outside_allowed_domains(addresses: Sequence[str], allowed: tuple[str, ...]) -> list[str]:
    """The addresses whose domain is not in `allowed` or below one (an empty allow-list allows every domain)."""
    suffixes = tuple("." + domain for domain in allowed)
    return [a for a in addresses if allowed and not ("." + a.rsplit("@", 1)[-1].lower()).endswith(suffixes)]


def domain_refusal(addresses: Sequence[str], allowed: tuple[str, ...], fix: str) -> str | None:
    """The sentence refusing the addresses outside the allow-list, or None; `fix` says what to change."""
    refused = outside_allowed_domains(addresses, allowed)
    if refused:
        return (
            f"recipient(s) {', '.join(refused)} are outside EXPORT_ALLOWED_EMAIL_DOMAINS ({', '.join(allowed)}); {fix}"
        )
    return None
