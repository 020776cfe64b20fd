"""The SQLite store's journal file: an append-only file of commits, next to the database.

A commit is one ``write`` of one record to ``<database>.journal``; the SQLite file is written only
when the journal is folded into it (:mod:`durabletask.emulator.store.journal`). An insert and a
commit in SQLite cost several page writes and 30-50 µs each; an appended record costs a few.

Layout: a 12-byte header (``DTJ\\x01`` and the journal's *generation*, 8 bytes big-endian), then one
record per commit: its length (4 bytes), the CRC-32 of its data (4 bytes), its data.

The generation ties the file to the database: the database's ``meta`` table names the generation
whose records are not folded yet. A fold writes the tables and the next generation number in one
SQLite transaction, then empties the file and writes the new header. If the process dies between
the two, the file still carries the old generation, and its records, already folded, are ignored
on the next open.

Durability: a record written survives the process being killed (it is in the page cache). With
``sync=True`` every record is also flushed to the disk before the commit is acknowledged. After a
power cut the end of the file may be incomplete or damaged: reading stops at the first record that
is incomplete or fails its checksum, the file is cut there and a warning says how much was dropped.
The commits before it are kept, in order, so the database never holds a later commit without an
earlier one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from pathlib import Path

logger = logging.getLogger("durabletask.emulator.store")

MAGIC = b"DTJ\x01"
HEADER_SIZE = 12
_RECORD_HEAD = 8


def header(generation: int) -> bytes:
    return MAGIC + generation.to_bytes(8, "big")


class JournalFile:
    """One journal file, opened for appending. Not thread-safe: the store calls it from one thread."""

    def __init__(self, path: Path, *, sync: bool = False) -> None:
        self.path = path
        self.sync = sync
        self.generation = 0
        self.size = 0
        """Bytes in the file (header included)."""
        self._fd: int | None = None
        self._error = ""

    def open(self, generation: int) -> list[bytes]:
        """Open (or create) the file for ``generation``; return the records it holds for that generation.

        Records of another generation were folded before the last stop: they are dropped.

        Raises:
            RuntimeError: the file exists but is not a journal.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            data = _read_all(fd)
            records: list[bytes] = []
            keep = 0
            if len(data) >= HEADER_SIZE and data.startswith(MAGIC):
                if int.from_bytes(data[4:HEADER_SIZE], "big") == generation:
                    records, keep = _records(data, self.path)
            elif data and not MAGIC.startswith(data[:4]):
                raise RuntimeError(f"{self.path} is not a durabletask journal; move it away (the emulator writes "
                                   f"its database's journal there)")
            if keep == 0:  # new, already folded, or only a partial header: start this generation afresh
                os.ftruncate(fd, 0)
                _write_all(fd, header(generation), 0)
                keep = HEADER_SIZE
            elif keep < len(data):
                os.ftruncate(fd, keep)
            if self.sync:
                os.fdatasync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._error = ""
        self.generation = generation
        self.size = keep
        return records

    def append(self, data: bytes) -> None:
        """Write one record; on return it is in the file (and on the disk with ``sync``).

        Raises:
            OSError: the write failed; the file is left as it was.
        """
        fd = self._require()
        record = len(data).to_bytes(4, "big") + zlib.crc32(data).to_bytes(4, "big") + data
        try:
            _write_all(fd, record, self.size)
            if self.sync:
                os.fdatasync(fd)
        except OSError:
            # No partial record may stay in front of the next one (if even this fails, the next open
            # cuts the file there).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.size)
            raise
        self.size += len(record)

    def reset(self, generation: int) -> None:
        """Empty the file and start ``generation`` (after its records were folded)."""
        fd = self._require()
        try:
            os.ftruncate(fd, 0)
            _write_all(fd, header(generation), 0)
            if self.sync:
                os.fdatasync(fd)
        except OSError as error:
            # Records appended now would carry a folded generation and be ignored on the next open:
            # refuse them instead.
            self.close()
            self._error = f"it could not be emptied after a fold ({error})"
            raise
        self.generation = generation
        self.size = HEADER_SIZE

    def close(self, *, remove: bool = False) -> None:
        """Close the file; ``remove`` deletes it (its records must have been folded)."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _require(self) -> int:
        if self._fd is None:
            raise OSError(f"the journal {self.path} is not open" + (f": {self._error}" if self._error else ""))
        return self._fd


def _records(data: bytes, path: Path) -> tuple[list[bytes], int]:
    """The records after the header, and the size of the valid part; an incomplete or damaged record and
    everything after it are dropped, with a warning."""
    records = []
    pos, end = HEADER_SIZE, len(data)
    while pos < end:
        if end - pos < _RECORD_HEAD:
            break
        length = int.from_bytes(data[pos:pos + 4], "big")
        start = pos + _RECORD_HEAD
        if end - start < length:
            break
        body = data[start:start + length]
        if zlib.crc32(body) != int.from_bytes(data[pos + 4:start], "big"):
            break
        records.append(body)
        pos = start + length
    if pos < end:
        logger.warning("%s: dropped its last %d byte(s) after %d complete commit(s): an incomplete or damaged "
                       "record (a write cut short by a crash or a power cut); the commits before it are kept",
                       path, end - pos, len(records))
    return records, pos


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
