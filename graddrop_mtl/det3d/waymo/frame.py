"""Reading Waymo ``Frame`` protos from segment files, and the compressed matrices inside them.

``dataset_pb2.Frame`` parses a record; the range images, their pixel poses and camera projections inside a frame
are zlib-compressed ``MatrixFloat`` / ``MatrixInt32`` protos. Decompressing them with :mod:`zlib` and reading their
packed ``data`` field straight into NumPy (instead of building a protobuf list of a million Python floats) is what
makes the conversion fast; :func:`decode_matrix` does that and checks the payload against the declared shape.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from google.protobuf.message import DecodeError
from waymo_open_dataset import dataset_pb2

from .tfrecord import TFRecordCorruptError, TFRecordReader

__all__ = ['FrameRecord', 'TFRecordCorruptError', 'WaymoFrameError', 'decode_matrix', 'encode_matrix_float',
           'encode_matrix_int32_zeros',
           'iter_frames', 'parse_frame', 'LASER_NAMES']

#: laser enum value -> name (``dataset_pb2.LaserName``): 1 TOP, 2 FRONT, 3 SIDE_LEFT, 4 SIDE_RIGHT, 5 REAR.
LASER_NAMES: dict[int, str] = {v.number: v.name for v in dataset_pb2.LaserName.Name.DESCRIPTOR.values}


class WaymoFrameError(ValueError):
    """A frame of a segment file cannot be read or converted (names the file, frame index and byte offset)."""


@dataclass
class FrameRecord:
    """A parsed frame with where it came from."""

    frame: 'dataset_pb2.Frame'
    index: int  # position of the frame in the segment (counting only frames that were read)
    offset: int  # byte offset of its record in the file
    path: str

    def where(self) -> str:
        return f'{self.path}: frame {self.index} (record at byte offset {self.offset})'


def parse_frame(data: bytes, index: int, offset: int, path: str) -> FrameRecord:
    """Parse one record's payload as a ``Frame``; a payload that is not one raises :class:`WaymoFrameError`."""
    frame = dataset_pb2.Frame()
    try:
        frame.ParseFromString(data)
    except DecodeError as e:
        raise WaymoFrameError(f'{path}: record {index} at byte offset {offset} is not a waymo_open_dataset Frame '
                              f'proto: {e}') from e
    return FrameRecord(frame, index, offset, path)


def iter_frames(path: str | os.PathLike, *, skip_corrupt: bool = False,
                reader: TFRecordReader | None = None) -> Iterator[FrameRecord]:
    """Yield the frames of a Waymo segment (``.tfrecord`` of ``Frame`` protos).

    Pass your own ``reader`` to read its :attr:`~.tfrecord.TFRecordReader.num_skipped` afterwards.

    Raises:
        TFRecordCorruptError: a record is corrupted or truncated (unless ``skip_corrupt``: then it is logged and
            skipped, see :class:`~.tfrecord.TFRecordReader`).
        WaymoFrameError: a record with valid CRCs is not a ``Frame`` proto.
    """
    reader = reader or TFRecordReader(path, skip_corrupt=skip_corrupt)
    for index, record in enumerate(reader.records()):
        yield parse_frame(record.data, index, record.offset, reader.path)


# ----------------------------------------------------------------------------------------------------------------
# Protobuf wire format of MatrixFloat / MatrixInt32:
#   field 1 (data): packed repeated float32 (wire type 2) or int32 varints; field 2 (shape): MatrixShape message
#   whose field 1 (dims) is repeated int32, packed or not.

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError('truncated varint')
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise DecodeError('varint too long')


def _skip(buf: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 2:
        n, pos = _varint(buf, pos)
        return pos + n
    if wire == 5:
        return pos + 4
    raise DecodeError(f'unsupported wire type {wire}')


def _int32(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >= 1 << 63 else v


def _decode_varints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(_int32(v))
    return out


def _parse_shape(buf: bytes) -> list[int]:
    dims, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 0:
            v, pos = _varint(buf, pos)
            dims.append(_int32(v))
        elif field == 1 and wire == 2:
            n, pos = _varint(buf, pos)
            dims.extend(_decode_varints(buf[pos:pos + n]))
            pos += n
        else:
            pos = _skip(buf, pos, wire)
    return dims


def decode_matrix(compressed: bytes, dtype: str = 'float32', *, what: str = 'matrix') -> np.ndarray:
    """Decompress (zlib) and decode a ``MatrixFloat`` (``dtype='float32'``) or ``MatrixInt32`` (``'int32'``).

    Returns the array reshaped to the proto's ``shape.dims``. ``what`` names the matrix in error messages.
    """
    try:
        buf = zlib.decompress(compressed)
    except zlib.error as e:
        raise DecodeError(f'{what}: not a zlib stream ({e})') from e
    chunks: list[np.ndarray] = []
    dims: list[int] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise DecodeError(f'{what}: truncated data field')
            if dtype == 'float32':
                chunks.append(np.frombuffer(buf, dtype='<f4', count=n // 4, offset=pos))
            else:
                chunks.append(np.asarray(_decode_varints(buf[pos:pos + n]), dtype=np.int32))
            pos += n
        elif field == 1 and wire == 5 and dtype == 'float32':  # unpacked float
            chunks.append(np.frombuffer(buf, dtype='<f4', count=1, offset=pos))
            pos += 4
        elif field == 1 and wire == 0 and dtype == 'int32':  # unpacked int32
            v, pos = _varint(buf, pos)
            chunks.append(np.asarray([_int32(v)], dtype=np.int32))
        elif field == 2 and wire == 2:
            n, pos = _varint(buf, pos)
            dims = _parse_shape(buf[pos:pos + n])
            pos += n
        else:
            pos = _skip(buf, pos, wire)
    data = chunks[0] if len(chunks) == 1 else (np.concatenate(chunks) if chunks else np.zeros(0, dtype))
    if int(np.prod(dims)) != data.size:
        raise DecodeError(f'{what}: {data.size} values do not fill the declared shape {dims}')
    return data.astype(np.float32 if dtype == 'float32' else np.int32, copy=False).reshape(dims)


def _encode_varint(v: int) -> bytes:
    v &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _encode_shape(shape: tuple[int, ...]) -> bytes:
    dims = b''.join(b'\x08' + _encode_varint(int(d)) for d in shape)
    return b'\x12' + _encode_varint(len(dims)) + dims


def encode_matrix_float(array: np.ndarray) -> bytes:
    """Serialize ``array`` as a ``MatrixFloat`` proto (float32 data, packed), uncompressed."""
    data = np.ascontiguousarray(array, dtype='<f4').tobytes()
    return b'\x0a' + _encode_varint(len(data)) + data + _encode_shape(array.shape)


def encode_matrix_int32_zeros(shape: tuple[int, ...]) -> bytes:
    """Serialize an all-zero ``MatrixInt32`` of ``shape`` (packed varints: one zero byte per value)."""
    n = int(np.prod(shape))
    return b'\x0a' + _encode_varint(n) + bytes(n) + _encode_shape(tuple(shape))

