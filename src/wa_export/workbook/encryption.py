"""ECMA-376 Agile encryption (AES-256, SHA-512) as Excel writes it: msoffcrypto-tool's key, descriptor and OLE layout,
each 4 KiB segment straight to disk (msoffcrypto's own encrypt holds the file in memory several times over)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from struct import pack
from typing import IO, Any

from msoffcrypto.method import ecma376_agile as agile
from msoffcrypto.method.container import ecma376_encrypted as ole

from wa_export.units import count_noun
from wa_export.workbook.publish import create_private_file, unlink_quietly
from wa_export.workbook_password import MAX_PASSWORD_LENGTH

_SEGMENT = 4096  # the format's segment size: each has its own IV
_MINI_STREAM_CUTOFF = 4096  # smaller streams go to the OLE mini stream; an empty workbook is over 5 KB


class WorkbookEncryptionError(Exception):
    """The message never contains the password."""


def encrypt_workbook(source: Path, target: Path, password: str) -> Path:
    """Write ``source`` encrypted to the new file ``target`` (0600, never overwritten; removed on failure)."""
    if not password or len(password) > MAX_PASSWORD_LENGTH:
        limit = count_noun(MAX_PASSWORD_LENGTH, "character")
        raise ValueError(f"the workbook password is empty or longer than {limit}")
    fd = create_private_file(target)
    failure = ""
    try:
        with os.fdopen(fd, "wb") as encrypted, open(source, "rb") as plain:
            _encrypt(plain, encrypted, password)
            encrypted.flush()
            os.fsync(encrypted.fileno())
    except BaseException as exc:
        unlink_quietly(target)
        if isinstance(exc, (OSError, WorkbookEncryptionError)) or not isinstance(exc, Exception):
            raise
        failure = type(exc).__name__
    if failure:
        # Outside the handler: the library's exception (which could carry the password) is not our context.
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
    container = ole.ECMA376Encrypted(range(package_size), _descriptor(info))  # the layout needs only its length
    layout = _write_layout(container, out)

    out.seek(layout.offsetData(layout.encryptionPackagePos))
    header = pack("<Q", plain_size)
    out.write(header)
    mac = hmac.new(hmac_key, header, hashlib.sha512)
    for index, segment in enumerate(iter(lambda: plain.read(_SEGMENT), b"")):
        iv = agile._generate_iv(key_data, pack("<I", index), key_data.saltValue)
        ciphertext = agile._encrypt_aes_cbc_padded(segment, secret_key, iv, key_data.blockSize)
        out.write(ciphertext)
        mac.update(ciphertext)
    if plain.tell() != plain_size:
        raise WorkbookEncryptionError("the workbook changed while it was being encrypted")

    # The data-integrity HMAC over the whole EncryptedPackage stream, as generate_integrity_parameter makes it.
    iv_key = agile._generate_iv(key_data, agile.blkKey_dataIntegrity1, key_data.saltValue)
    iv_value = agile._generate_iv(key_data, agile.blkKey_dataIntegrity2, key_data.saltValue)
    info.encryptedHmacKey = agile._encrypt_aes_cbc(hmac_key, secret_key, iv_key)
    info.encryptedHmacValue = agile._encrypt_aes_cbc(mac.digest(), secret_key, iv_value)
    descriptor, entry = _descriptor(info), container._dirs[ole.DSPos.iEncryptionInfo]
    if len(descriptor) != len(entry.Content):
        raise WorkbookEncryptionError("the encryption descriptor changed its length")
    out.seek(layout.offsetMiniData(entry.StartingSectorLocation))
    out.write(descriptor)


def _descriptor(info: Any) -> bytes:  # the EncryptionInfo stream
    return bytes(info.getEncryptionDescriptorHeader()) + str(info.toEncryptionDescriptor()).encode("utf-8")


def _write_layout(container: Any, out: IO[bytes]) -> Any:
    """The library's ``_write_to`` without the payload and without its zero-filled buffer of the file's size."""
    layout = ole.ECMA376EncryptedLayout(container._header.sectorSize)
    container._set_sector_locations_of_streams(layout)
    container._detect_sector_num(layout)
    header, dirs = container._header, container._dirs
    header.firstDirectorySectorLocation = layout.directoryEntryPos
    header.firstMiniFatSectorLocation = layout.miniFatPos
    header.numMiniFatSectors = layout.numMiniFatSectors
    dirs[ole.DSPos.iRoot].StartingSectorLocation = layout.miniFatDataPos
    dirs[ole.DSPos.iRoot].Content = b"\0" * (64 * layout.miniFatNum)
    dirs[ole.DSPos.iEncryptionPackage].StartingSectorLocation = layout.encryptionPackagePos
    header.difat.extend(layout.fatPos + i for i in range(min(layout.fatSectorNum, ole.Header.FIRSTNUMDIFAT)))
    header.numFatSectors = layout.fatSectorNum
    header.numDifatSectors = layout.difatSectorNum
    if layout.difatSectorNum > 0:
        header.firstDifatSectorLocation = layout.difatPos
    out.truncate(layout.totalSize)  # a sparse file of the final size
    out.seek(0)
    header.write_to(out)
    container._write_DIFAT(out, layout)
    container._write_FAT_start(out, layout)
    container._write_MiniFAT(out, layout)
    container._write_directory_entries(out, layout)
    for entry in dirs:
        if entry.Type == ole.DirectoryEntryType.STREAM and entry is not dirs[ole.DSPos.iEncryptionPackage]:
            out.seek(layout.offsetMiniData(entry.StartingSectorLocation))
            out.write(entry.Content)
    return layout
