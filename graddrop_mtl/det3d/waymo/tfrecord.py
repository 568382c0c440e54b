"""TFRecord files without TensorFlow: a reader that verifies both CRCs and a writer.

A TFRecord file is a sequence of records, each framed as::

    uint64 length           little endian
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

(:mod:`.crc` computes the masked CRC-32C). Waymo Open Dataset segments are uncompressed TFRecord files of
``Frame`` protos.

Bad input raises :class:`TFRecordCorruptError`, which names the file, the byte offset of the bad record and what
is wrong. With ``skip_corrupt=True`` the reader logs a warning instead and goes on: a record whose payload CRC is
wrong is skipped (its length is trusted, since the length CRC matched); after a bad length header it scans forward
for the next position where a length header with a valid CRC starts; a truncated last record ends the file.
"""
from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from .crc import masked_crc32c

__all__ = ['TFRecordCorruptError', 'TFRecordReader', 'TFRecordWriter', 'read_tfrecord', 'write_tfrecord']

logger = logging.getLogger(__name__)

_HEADER = struct.Struct('<QI')  # length, masked crc of the 8 length bytes
_FOOTER = struct.Struct('<I')  # masked crc of the payload


class TFRecordCorruptError(ValueError):
    """A record of a TFRecord file is corrupted or truncated.

    Attributes:
        path: the file.
        offset: byte offset of the record's start (its length header) in the file.
        reason: what is wrong.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = str(path)
        self.offset = int(offset)
        self.reason = reason
        super().__init__(f'{self.path}: corrupted TFRecord at byte offset {self.offset}: {reason}')

    def __reduce__(self):  # picklable across worker processes
        return type(self), (self.path, self.offset, self.reason)


@dataclass(frozen=True)
class Record:
    """One record: its payload and the byte offset of its length header in the file."""

    data: bytes
    offset: int


class TFRecordReader:
    """Iterate over the records of one TFRecord file, verifying the length and payload CRCs.

    Args:
        path: the ``.tfrecord`` file.
        skip_corrupt: log and skip corrupted records (see the module docstring) instead of raising
            :class:`TFRecordCorruptError`.
        verify_crc: check the payload CRCs (the length CRC is always checked: a wrong length cannot be trusted).

    Iterating yields payloads (``bytes``); :meth:`records` also yields their byte offsets. :attr:`num_skipped`
    counts the records skipped so far (only with ``skip_corrupt``).
    """

    def __init__(self, path: str | os.PathLike, *, skip_corrupt: bool = False, verify_crc: bool = True) -> None:
        self.path = os.fspath(path)
        self.skip_corrupt = skip_corrupt
        self.verify_crc = verify_crc
        self.num_skipped = 0

    def __iter__(self) -> Iterator[bytes]:
        for record in self.records():
            yield record.data

    def _corrupt(self, offset: int, reason: str) -> TFRecordCorruptError:
        err = TFRecordCorruptError(self.path, offset, reason)
        if self.skip_corrupt:
            self.num_skipped += 1
            logger.warning('%s (skipped: --skip-corrupt)', err)
        return err

    def records(self) -> Iterator[Record]:
        """Yield every :class:`Record` (payload and offset) of the file."""
        size = os.path.getsize(self.path)
        with open(self.path, 'rb') as f:
            offset = 0
            while offset < size:
                header = f.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    err = self._corrupt(offset, f'truncated record header ({len(header)} of {_HEADER.size} bytes '
                                                f'before the end of the file)')
                    if self.skip_corrupt:
                        return
                    raise err
                length, length_crc = _HEADER.unpack(header)
                if masked_crc32c(header[:8]) != length_crc:
                    err = self._corrupt(offset, f'length CRC mismatch (length field reads {length})')
                    if not self.skip_corrupt:
                        raise err
                    nxt = self._resync(f, offset + 1, size)
                    if nxt is None:
                        logger.warning('%s: no valid record after byte offset %d', self.path, offset)
                        return
                    offset = nxt
                    f.seek(offset)
                    continue
                end = offset + _HEADER.size + length + _FOOTER.size
                if end > size:
                    err = self._corrupt(offset, f'truncated record: needs {length} payload bytes + 4 CRC bytes, only '
                                                f'{size - offset - _HEADER.size} bytes left in the file')
                    if self.skip_corrupt:
                        return
                    raise err
                data = f.read(length)
                (data_crc,) = _FOOTER.unpack(f.read(_FOOTER.size))
                if self.verify_crc and masked_crc32c(data) != data_crc:
                    err = self._corrupt(offset, f'payload CRC mismatch ({length}-byte record)')
                    if not self.skip_corrupt:
                        raise err
                else:
                    yield Record(data, offset)
                offset = end

    def _resync(self, f: BinaryIO, start: int, size: int) -> int | None:
        """Offset of the first valid length header at or after ``start`` (whose record fits in the file)."""
        chunk = 1 << 22
        pos = start
        while pos + _HEADER.size <= size:
            f.seek(pos)
            buf = f.read(chunk + _HEADER.size - 1)
            arr = np.frombuffer(buf, dtype=np.uint8)
            n = arr.size - _HEADER.size + 1
            if n <= 0:
                return None
            # Candidates: the length fits in the rest of the file (in particular its upper 4 bytes are zero).
            hi = np.zeros(n, dtype=bool)
            for k in range(4, 8):
                hi |= arr[k:k + n] != 0
            cand = np.flatnonzero(~hi)
            if cand.size:
                lengths = (arr[cand].astype(np.uint64) | (arr[cand + 1].astype(np.uint64) << np.uint64(8))
                           | (arr[cand + 2].astype(np.uint64) << np.uint64(16))
                           | (arr[cand + 3].astype(np.uint64) << np.uint64(24)))
                fits = pos + cand + _HEADER.size + lengths.astype(np.int64) + _FOOTER.size <= size
                for c in cand[fits]:
                    header = buf[c:c + _HEADER.size]
                    _, length_crc = _HEADER.unpack(header)
                    if masked_crc32c(header[:8]) == length_crc:
                        return pos + int(c)
            pos += n
        return None


def read_tfrecord(path: str | os.PathLike, *, skip_corrupt: bool = False, verify_crc: bool = True) -> Iterator[bytes]:
    """Yield the payloads of a TFRecord file (see :class:`TFRecordReader`)."""
    return iter(TFRecordReader(path, skip_corrupt=skip_corrupt, verify_crc=verify_crc))


class TFRecordWriter:
    """Write records to a TFRecord file (uncompressed, as Waymo ships them). Use as a context manager::

        with TFRecordWriter('segment.tfrecord') as w:
            w.write(frame.SerializeToString())
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._file: BinaryIO | None = open(self.path, 'wb')
        self.num_records = 0

    def write(self, data: bytes) -> int:
        """Append one record; return the byte offset it was written at."""
        if self._file is None:
            raise ValueError(f'{self.path}: TFRecordWriter is closed')
        offset = self._file.tell()
        length = struct.pack('<Q', len(data))
        self._file.write(length + struct.pack('<I', masked_crc32c(length)))
        self._file.write(data)
        self._file.write(_FOOTER.pack(masked_crc32c(data)))
        self.num_records += 1
        return offset

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> 'TFRecordWriter':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_tfrecord(path: str | os.PathLike, records: Iterable[bytes]) -> int:
    """Write ``records`` to ``path``; return how many were written."""
    with TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
        return w.num_records
