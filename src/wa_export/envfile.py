"""The process environment and a `.env` file, read as operators write it: UTF-16 or a byte-order mark (Windows
editors; python-dotenv reads neither), a line that is not `NAME=value` skipped and reported by its number."""

from __future__ import annotations

import codecs
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from wa_export.errors import ConfigError
from wa_export.mongodb_uri import DEFAULT_MONGODB_URI

# python-dotenv logs "could not parse statement" without the file name; read_env_file reports those lines itself.
logging.getLogger("dotenv.main").setLevel(logging.ERROR)

# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


@dataclass(frozen=True)
class ConfigurationSource:
    """Where the variables came from: the process environment and at most one .env file."""

    values: dict[str, str]  # effective: the .env values overridden by the real environment
    process_keys: frozenset[str]
    env_file: Path | None
    file_values: dict[str, str]
    warnings: tuple[str, ...]

    def origin(self, name: str) -> str:
        """ "environment", ".env file <path>" or "default" (not set anywhere)."""
        if name in self.process_keys:
            return "environment"
        if name in self.file_values:
            return f".env file {self.env_file}"
        return "default"


def read_configuration(env_file: Path | None, environ: Mapping[str, str] | None = None) -> ConfigurationSource:
    """The process environment and the `.env` file (./.env, or --env-file), with their warnings."""
    process = dict(os.environ if environ is None else environ)
    path: Path | None = env_file or Path.cwd() / ".env"
    if path is not None and not path.is_file():
        if env_file is not None:
            raise ConfigError(f"--env-file {env_file} does not exist or is not a file.")
        path = None  # a directory named .env (often a virtualenv) is not a settings file
    file_values: dict[str, str] = {}
    warnings: list[str] = []
    if path is not None:
        file_values, warnings = read_env_file(path)
    elif not process.get("MONGODB_URI", "").strip():
        warnings.append(
            f"no .env file in {Path.cwd()} and no MONGODB_URI in the environment: "
            f"using {DEFAULT_MONGODB_URI} (set MONGODB_URI, or pass --env-file)."
        )
    merged = {**file_values, **process}
    return ConfigurationSource(merged, frozenset(process), path, file_values, tuple(warnings))


def read_env_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """The variables of one `.env` file, and a warning per line that was ignored."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(
            f"Cannot read the env file {path} ({error.strerror or error}); "
            "make it readable by the user that runs wa-export, or pass another one with --env-file."
        ) from None
    text = _decode_env_bytes(data, path)
    values = {key: value for key, value in dotenv_values(stream=io.StringIO(text)).items() if value is not None}
    return values, _ignored_lines(text, path)


def _decode_env_bytes(data: bytes, path: Path) -> str:
    """A BOM decides; without one, NUL bytes in every other position mean UTF-16; anything else must be UTF-8."""
    marked = next(((mark, encoding) for mark, encoding in _BYTE_ORDER_MARKS if data.startswith(mark)), None)
    if marked is not None:
        data, encoding = data[len(marked[0]) :], marked[1]
    elif len(data) >= 2 and data[1::2].count(0) > len(data) // 4:
        encoding = "utf-16-le"
    else:
        encoding = "utf-16-be" if len(data) >= 2 and data[0::2].count(0) > len(data) // 4 else "utf-8"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count("\n".encode(encoding)) + 1
        raise ConfigError(
            f"The env file {path} is not valid {encoding.upper()} text (line {line}); "
            "save it as UTF-8 (or UTF-16 with a byte-order mark)."
        ) from None


def _ignored_lines(text: str, path: Path) -> list[str]:
    # The line itself is never quoted: it may hold a password that lost its name.
    warnings: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        # python-dotenv counts a statement's line from the blank lines before it.
        leading = binding.original.string[: len(binding.original.string) - len(binding.original.string.lstrip())]
        line = binding.original.line + len(leading.replace("\r\n", "\n").replace("\r", "\n").split("\n")) - 1
        if binding.error:
            warnings.append(f"{path} line {line} is not NAME=value and was ignored.")
        elif binding.key is not None and binding.value is None:
            warnings.append(f"{path} line {line} sets {binding.key} without '=' and was ignored.")
    return warnings
