"""Password protection of a finished workbook: ECMA-376 Agile encryption (AES-256, SHA-512) in an OLE file.

This is what Excel's "Encrypt with password" writes; Excel, LibreOffice and Numbers open it after asking
for the password. msoffcrypto-tool supplies the cryptography (key derivation from the password, the
password verifier, the encryption descriptor) and the OLE compound-file layout. Its own
``OOXMLFile.encrypt`` holds the whole file in memory several times over (the encrypted payload, a copy
of it, a zero-filled container buffer, a copy of that); here the payload is encrypted 4 KiB segment by
segment straight into the target file and its HMAC is computed on the way, so memory stays bounded
whatever the workbook's size. The internals this uses (the container's layout methods, the agile
helpers) are pinned by the version range in pyproject.toml and by tests that decrypt with the
library and with LibreOffice.

The password never appears in an exception raised here: a failure inside the library is reported by
its exception type only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from struct import pack
from typing import IO, Any

from msoffcrypto.method import ecma376_agile as agile
from msoffcrypto.method.container.ecma376_encrypted import (
    DirectoryEntryType,
    DSPos,
    ECMA376Encrypted,
    ECMA376EncryptedLayout,
    Header,
)

from wa_export.units import count_noun
from wa_export.workbook.publish import create_private_file, unlink_quietly
from wa_export.workbook_password import MAX_PASSWORD_LENGTH

__all__ = ["WorkbookEncryptionError", "encrypt_workbook"]
# The segment size the format prescribes: each 4096-byte segment has its own IV.
_SEGMENT = 4096
# Streams up to this size live in the OLE mini stream; the encrypted payload must be larger
# (a workbook always is: an empty one is over 5 KB), because the container puts it in regular sectors.
_MINI_STREAM_CUTOFF = 4096


class WorkbookEncryptionError(Exception):
    """The workbook could not be encrypted; the message never contains the password."""


def encrypt_workbook(source: Path, target: Path, password: str) -> Path:
    """Write ``source`` encrypted with ``password`` to the new file ``target`` (created 0600, never overwritten).

    On any failure ``target`` is removed; ``source`` is left as it was.
    """
    if not isinstance(password, str) or not password:
        raise ValueError("the workbook password is empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"the workbook password is longer than {count_noun(MAX_PASSWORD_LENGTH, 'character')}")
    fd = create_private_file(target)
    failure = ""
    try:
        with os.fdopen(fd, "wb") as encrypted, open(source, "rb") as plain:
            _encrypt(plain, encrypted, password)
            encrypted.flush()
            os.fsync(encrypted.fileno())
    except (OSError, WorkbookEncryptionError):
        unlink_quietly(target)
        raise
    except Exception as exc:
        unlink_quietly(target)
        failure = type(exc).__name__
    except BaseException:
        unlink_quietly(target)
        raise
    if failure:
        # Raised here, outside the handler, so the library's exception (its message or arguments could
        # carry the password) is neither the cause nor the context of ours.
        raise WorkbookEncryptionError(f"could not encrypt {source.name} ({failure})")
    return target


def _encrypt(plain: IO[bytes], out: IO[bytes], password: str) -> None:
    plain_size = os.fstat(plain.fileno()).st_size
    # The EncryptedPackage stream: the plain size (8 bytes) and the segments, each padded to the AES block.
    package_size = 8 + -(-plain_size // 16) * 16
    if package_size <= _MINI_STREAM_CUTOFF:
        raise WorkbookEncryptionError(f"the file is too small to be a workbook ({count_noun(plain_size, 'byte')})")

    info, secret_key = agile.ECMA376Agile.generate_encryption_parameters(password)
    key_data = info.keyData
    hmac_key = secrets.token_bytes(key_data.hashSize)
    # The descriptor's length does not depend on the HMAC's value: lay the file out with a stand-in.
    info.encryptedHmacKey = info.encryptedHmacValue = bytes(key_data.hashSize)
    container = _StreamedContainer(package_size, _descriptor(info))
    package_offset = container.write_layout(out)

    out.seek(package_offset)
    header = pack("<Q", plain_size)
    out.write(header)
    mac = hmac.new(hmac_key, header, hashlib.sha512)
    index = 0
    read = 0
    while segment := plain.read(_SEGMENT):
        iv = agile._generate_iv(key_data, pack("<I", index), key_data.saltValue)
        ciphertext = agile._encrypt_aes_cbc_padded(segment, secret_key, iv, key_data.blockSize)
        out.write(ciphertext)
        mac.update(ciphertext)
        read += len(segment)
        index += 1
    if read != plain_size:
        raise WorkbookEncryptionError("the workbook changed while it was being encrypted")

    # The data-integrity HMAC over the whole EncryptedPackage stream, as generate_integrity_parameter makes it.
    iv_key = agile._generate_iv(key_data, agile.blkKey_dataIntegrity1, key_data.saltValue)
    iv_value = agile._generate_iv(key_data, agile.blkKey_dataIntegrity2, key_data.saltValue)
    info.encryptedHmacKey = agile._encrypt_aes_cbc(hmac_key, secret_key, iv_key)
    info.encryptedHmacValue = agile._encrypt_aes_cbc(mac.digest(), secret_key, iv_value)
    container.rewrite_encryption_info(out, _descriptor(info))


def _descriptor(info: Any) -> bytes:
    """The EncryptionInfo stream: version header and XML descriptor."""
    return bytes(info.getEncryptionDescriptorHeader()) + str(info.toEncryptionDescriptor()).encode("utf-8")


class _SizedPayload:
    """Stands in for the EncryptedPackage content: the layout needs only its length."""

    def __init__(self, size: int) -> None:
        self._size = size

    def __len__(self) -> int:
        return self._size


class _StreamedContainer(ECMA376Encrypted):  # type: ignore[misc]
    """The library's container, written without holding the payload: its ``_write_to`` minus the buffers."""

    def __init__(self, package_size: int, encryption_info: bytes) -> None:
        super().__init__(_SizedPayload(package_size), encryption_info)
        self._layout: Any = None

    def write_layout(self, out: IO[bytes]) -> int:
        """Write header, allocation tables, directory and the small streams; return the payload's offset."""
        layout = ECMA376EncryptedLayout(self._header.sectorSize)
        self._set_sector_locations_of_streams(layout)
        self._detect_sector_num(layout)

        self._header.firstDirectorySectorLocation = layout.directoryEntryPos
        self._header.firstMiniFatSectorLocation = layout.miniFatPos
        self._header.numMiniFatSectors = layout.numMiniFatSectors
        self._dirs[DSPos.iRoot].StartingSectorLocation = layout.miniFatDataPos
        self._dirs[DSPos.iRoot].Content = b"\0" * (64 * layout.miniFatNum)
        self._dirs[DSPos.iEncryptionPackage].StartingSectorLocation = layout.encryptionPackagePos
        for i in range(min(layout.fatSectorNum, Header.FIRSTNUMDIFAT)):
            self._header.difat.append(layout.fatPos + i)
        self._header.numFatSectors = layout.fatSectorNum
        self._header.numDifatSectors = layout.difatSectorNum
        if layout.difatSectorNum > 0:
            self._header.firstDifatSectorLocation = layout.difatPos

        # A sparse file of the final size instead of a zero-filled buffer in memory.
        out.truncate(layout.totalSize)
        out.seek(0)
        self._header.write_to(out)
        self._write_DIFAT(out, layout)
        self._write_FAT_start(out, layout)
        self._write_MiniFAT(out, layout)
        self._write_directory_entries(out, layout)
        for entry in self._dirs:
            if entry.Type == DirectoryEntryType.STREAM and entry is not self._dirs[DSPos.iEncryptionPackage]:
                out.seek(layout.offsetMiniData(entry.StartingSectorLocation))
                out.write(entry.Content)
        self._layout = layout
        return int(layout.offsetData(layout.encryptionPackagePos))

    def rewrite_encryption_info(self, out: IO[bytes], encryption_info: bytes) -> None:
        entry = self._dirs[DSPos.iEncryptionInfo]
        if len(encryption_info) != len(entry.Content):
            raise WorkbookEncryptionError("the encryption descriptor changed its length")
        entry.Content = encryption_info
        out.seek(self._layout.offsetMiniData(entry.StartingSectorLocation))
        out.write(encryption_info)
