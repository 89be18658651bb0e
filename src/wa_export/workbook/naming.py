"""``EXPORT_DIR/<slug>/<slug>_whatsapp_messages_YYYY-MM-DD_HH-MM.xlsx`` from a hostile workspace name. A marker file
holding the workspace id claims a folder; an unmarked ``<slug>/`` (the original service's) is adopted only when
exactly one active workspace has that slug."""

from __future__ import annotations

import errno
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import suppress
from datetime import datetime
from pathlib import Path

FOLDER_MARKER = ".wa-export-workspace"
SLUG_MAX_LENGTH = 100  # keeps "<slug>_<id>" folders and hidden temp names of workbooks far below 255 bytes
MAX_SAME_MINUTE_FILES = 999
_FILE_NAME = (
    r"^(?P<slug>{})_whatsapp_messages_(?P<stamp>\d{{4}}-\d{{2}}-\d{{2}}_\d{{2}}-\d{{2}})(?:_(?P<seq>\d+))?\.xlsx$"
)
EXPORT_FILE_PATTERN: re.Pattern[str] = re.compile(_FILE_NAME.format("[a-z0-9_]+"))

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# Lower-case letters NFKD does not decompose into ASCII plus marks; other non-ASCII becomes "_".
_TRANSLITERATION = str.maketrans(
    {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ħ": "h", "ı": "i"}
)
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"{port}{i}" for port in ("com", "lpt") for i in range(1, 10))}
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def _safe_id(workspace_id: object) -> str:
    return _NOT_SLUG.sub("", str(workspace_id).lower())[:64]


def slugify(name: object, workspace_id: str) -> str:
    """Workspace name -> ``[a-z0-9_]`` slug (``Café Olé`` -> ``cafe_ole``), or ``workspace_<id>`` when nothing is left."""
    text = "" if name is None else str(name).lower()
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).translate(_TRANSLITERATION)
    slug = _NOT_SLUG.sub("_", text).strip("_")[:SLUG_MAX_LENGTH].rstrip("_")
    if not slug:
        ident = _safe_id(workspace_id)
        slug = f"workspace_{ident}" if ident else "workspace"
    return f"{slug}_ws" if slug in _WINDOWS_RESERVED else slug  # the folder may be copied to Windows


def is_slug(name: str) -> bool:
    """Whether `name` could be a folder name slugify() produced."""
    return re.match(r"^[a-z0-9_]+$", name) is not None and len(name) <= SLUG_MAX_LENGTH + 3


def contested_slugs(names_and_ids: Iterable[tuple[object, str]]) -> frozenset[str]:
    """The slugs that more than one of these (name, id) workspaces has: nobody adopts their unmarked folder."""
    counts = Counter(slugify(name, workspace_id) for name, workspace_id in names_and_ids)
    return frozenset(slug for slug, count in counts.items() if count > 1)


def _make_private_dir(folder: Path) -> None:
    with suppress(FileExistsError):  # created concurrently: leave its mode to whoever made it
        os.mkdir(folder, 0o700)
        os.chmod(folder, 0o700)  # the umask must not loosen or tighten it


def _read_marker(folder_fd: int) -> str | None:
    """The id in the folder's marker; None without one, "" for a symlinked marker (not ours)."""
    try:
        fd = os.open(FOLDER_MARKER, os.O_RDONLY | _NOFOLLOW, dir_fd=folder_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return ""
        raise
    with os.fdopen(fd, "rb") as marker:
        return marker.read(1024).decode("utf-8", "replace").strip()


def _open_folder(folder: Path) -> int | None:
    """An O_NOFOLLOW descriptor, so a folder swapped for a symlink cannot redirect us; None for a file or a symlink."""
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def _owned_or_claimed(folder: Path, workspace_id: str, adopt: bool) -> bool:
    """Whether the folder is this workspace's, claiming it if missing or empty, or with `adopt` unmarked."""
    while True:  # made or removed meanwhile (cleanup emptied it): judged again
        try:
            folder_fd = _open_folder(folder)
        except FileNotFoundError:
            _make_private_dir(folder)
            continue
        if folder_fd is None:
            return False  # a file or a symlink: taken by someone else, never followed
        try:
            marker = _read_marker(folder_fd)
            if marker is not None:
                return marker == workspace_id
            if os.listdir(folder_fd):
                if not adopt:
                    return False
                os.fchmod(folder_fd, 0o700)  # adopted: its workbooks hold personal data
            fd = os.open(FOLDER_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=folder_fd)
            with os.fdopen(fd, "wb", buffering=0) as marker_file:
                marker_file.write(f"{workspace_id}\n".encode())
                os.fsync(marker_file.fileno())
            return True
        except FileExistsError:  # claimed between our checks: only the marker decides
            return _read_marker(folder_fd) == workspace_id
        except FileNotFoundError:  # removed meanwhile: the name is free again
            continue
        finally:
            os.close(folder_fd)


def unclaimed_folders(export_dir: Path, slugs: Iterable[str]) -> list[str]:
    """The slugs naming a real folder in ``export_dir`` with content but no marker: what adoption would take."""
    found: list[str] = []
    for slug in filter(is_slug, sorted(set(slugs))):
        with suppress(FileNotFoundError):
            folder_fd = _open_folder(Path(export_dir) / slug)
            if folder_fd is not None:
                try:
                    if _read_marker(folder_fd) is None and os.listdir(folder_fd):
                        found.append(slug)
                finally:
                    os.close(folder_fd)
    return found


def workspace_folder(export_dir: Path, slug: str, workspace_id: str, *, adopt_unmarked: bool = False) -> Path:
    """Create (0700) and return this workspace's folder: ``slug``, else ``<slug>_<last 8 of id>``, else
    ``<slug>_<id>`` (FileExistsError if all are others'). `adopt_unmarked`: take an unmarked ``<slug>/``."""
    if not is_slug(slug):
        raise ValueError(f"not a slug produced by slugify(): {slug!r}")
    ident = _safe_id(workspace_id)
    if not ident:
        raise ValueError("workspace id has no usable characters")
    export_dir = Path(export_dir)
    for folder in (*reversed(export_dir.parents), export_dir):  # os.makedirs would leave parents to the umask
        if not (folder.exists() or folder.is_symlink()):
            _make_private_dir(folder)
    root = export_dir.resolve(strict=True)
    if not root.is_dir():  # EXPORT_DIR is a file: say so, not "taken by another"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(root / slug))
    for name in dict.fromkeys([slug, f"{slug}_{ident[-8:]}", f"{slug}_{ident}"]):  # ordered, without duplicates
        candidate = root / name  # slug characters only: never outside root
        if _owned_or_claimed(candidate, workspace_id, adopt_unmarked and name == slug):  # the original's name
            if candidate.resolve(strict=True) != candidate:
                raise ValueError(f"folder {candidate} resolves outside {root}")
            return candidate
    raise FileExistsError(errno.EEXIST, "every folder name for this workspace is taken by another", str(root / slug))


def publish_path_candidates(folder: Path, slug: str, run_time_local: datetime) -> Iterator[Path]:
    """The base file name, then ``_2``, ``_3``, ... (finite) for the same minute: for ``WorkbookWriter.commit``."""
    if not is_slug(slug):  # never a path out of the folder
        raise ValueError(f"not a slug produced by slugify(): {slug!r}")
    base = f"{slug}_whatsapp_messages_{run_time_local:%Y-%m-%d_%H-%M}"
    yield Path(folder) / f"{base}.xlsx"
    for sequence in range(2, MAX_SAME_MINUTE_FILES + 1):
        yield Path(folder) / f"{base}_{sequence}.xlsx"


def export_file_pattern_for(slug: str) -> re.Pattern[str]:
    """Pattern matching exactly this slug's workbook names (for cleanup)."""
    return re.compile(_FILE_NAME.format(re.escape(slug)))
