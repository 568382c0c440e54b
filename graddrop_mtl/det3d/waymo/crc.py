"""CRC-32C (Castagnoli), the checksum of the TFRecord framing.

:func:`crc32c` uses ``google-crc32c`` (a maintained C extension, in ``requirements/runtime.txt``) when it imports
with its compiled implementation, and otherwise :func:`crc32c_numpy`, which needs nothing beyond NumPy and is the
test oracle of the compiled path. ``GRADDROP_CRC32C=numpy`` forces the NumPy path.

The NumPy path: short inputs go through the classic byte-wise table loop in Python. Long inputs are split into
``K`` equal lanes that are checksummed side by side (one vectorised table step per byte position, all lanes at
once); the lane checksums are then merged pairwise with the CRC "shift by n zero bytes" operator, a linear map over
GF(2) applied through four 256-entry byte tables, so no compiled extension is needed::

    >>> hex(crc32c(b'123456789'))
    '0xe3069283'
    >>> hex(masked_crc32c(b'123456789'))  # the value TFRecord stores
    '0xc78ab0e5'
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

__all__ = ['crc32c', 'crc32c_numpy', 'masked_crc32c', 'mask_crc', 'BACKEND']

_POLY = 0x82F63B78  # CRC-32C, reflected
_MASK_DELTA = 0xA282EAD8


def _make_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _make_table()
_TABLE_LIST: list[int] = [int(v) for v in _TABLE]

#: inputs shorter than this use the pure-Python loop (a NumPy call costs about as much as 2-3 bytes of it).
_VECTOR_MIN = 4096


def _crc_py(crc: int, data: bytes | memoryview) -> int:
    """Advance the raw (non-inverted) CRC state ``crc`` over ``data`` byte by byte."""
    table = _TABLE_LIST
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


# ----------------------------------------------------------------------------------------------------------------
# GF(2) linear maps on 32-bit CRC states, stored as their 32 columns (the image of each bit).

def _apply(cols: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Apply the linear map with columns ``cols`` ([32] uint32) to every value of ``x`` (uint32 array)."""
    bits = (x[..., None] >> np.arange(32, dtype=np.uint32)) & np.uint32(1)
    return np.bitwise_xor.reduce(np.where(bits.astype(bool), cols, np.uint32(0)), axis=-1).astype(np.uint32)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Columns of ``a o b`` (apply ``b`` first)."""
    return _apply(a, b)


@lru_cache(maxsize=None)
def _one_byte_shift() -> np.ndarray:
    basis = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
    return (_TABLE[basis & np.uint32(0xFF)] ^ (basis >> np.uint32(8))).astype(np.uint32)


@lru_cache(maxsize=256)
def _shift_cols(nbytes: int) -> np.ndarray:
    """Columns of the map 'advance a raw CRC state over ``nbytes`` zero bytes'."""
    result = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)  # identity
    power = _one_byte_shift()
    n = nbytes
    while n:
        if n & 1:
            result = _compose(power, result)
        n >>= 1
        if n:
            power = _compose(power, power)
    return result


@lru_cache(maxsize=256)
def _shift_tables(nbytes: int) -> np.ndarray:
    """[4, 256] byte tables of the zero-byte shift: ``shift(x) = T0[x&255] ^ T1[x>>8&255] ^ ...``."""
    cols = _shift_cols(nbytes)
    values = np.arange(256, dtype=np.uint32)
    tables = np.zeros((4, 256), dtype=np.uint32)
    for k in range(4):
        tables[k] = _apply(cols, values << np.uint32(8 * k))
    return tables


def _shift(x: np.ndarray, nbytes: int) -> np.ndarray:
    t = _shift_tables(nbytes)
    return (t[0][x & 0xFF] ^ t[1][(x >> 8) & 0xFF] ^ t[2][(x >> 16) & 0xFF] ^ t[3][x >> 24]).astype(np.uint32)


def _crc_vectorised(buf: np.ndarray) -> tuple[int, int]:
    """Raw CRC (initial state 0) of the longest prefix of ``buf`` that splits into power-of-two lanes.

    Returns ``(crc, number of bytes consumed)``.
    """
    n = buf.size
    lanes = 1 << max(6, min(16, (n // 64).bit_length() - 1))
    length = n // lanes
    lanes_data = buf[:lanes * length].reshape(lanes, length).T.copy()  # [length, lanes], row j = byte j of each lane
    crc = np.zeros(lanes, dtype=np.uint32)
    table = _TABLE
    for row in lanes_data:
        crc = table[(crc ^ row) & 0xFF] ^ (crc >> 8)
    # Merge neighbours: crc(A || B) = shift(crc(A), len(B)) ^ crc(B) for raw CRCs with initial state 0.
    block = length
    while crc.size > 1:
        crc = _shift(crc[0::2], block) ^ crc[1::2]
        block *= 2
    return int(crc[0]), lanes * length


def crc32c_numpy(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of ``data`` in NumPy; pass a previous result as ``crc`` to continue a running checksum."""
    view = memoryview(data).cast('B')
    state = crc ^ 0xFFFFFFFF
    if view.nbytes < _VECTOR_MIN:
        return _crc_py(state, view) ^ 0xFFFFFFFF
    buf = np.frombuffer(view, dtype=np.uint8)
    raw, used = _crc_vectorised(buf)
    # The initial state contributes linearly: shift it over the consumed bytes.
    state = int(_shift(np.array([state], dtype=np.uint32), used)[0]) ^ raw
    state = _crc_py(state, view[used:])
    return state ^ 0xFFFFFFFF


def _google_crc32c():
    """The ``google_crc32c`` module if it imports with its C implementation (its pure-Python fallback is slower
    than :func:`crc32c_numpy`), else None."""
    if os.environ.get('GRADDROP_CRC32C', '').lower() == 'numpy':
        return None
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c if getattr(google_crc32c, 'implementation', None) == 'c' else None


_GOOGLE = _google_crc32c()

#: which implementation :func:`crc32c` uses: ``'google-crc32c'`` or ``'numpy'``.
BACKEND = 'google-crc32c' if _GOOGLE is not None else 'numpy'


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of ``data``; pass a previous result as ``crc`` to continue a running checksum."""
    if _GOOGLE is not None:
        return _GOOGLE.extend(crc, data if isinstance(data, bytes) else bytes(memoryview(data).cast('B')))
    return crc32c_numpy(data, crc)


def mask_crc(crc: int) -> int:
    """TFRecord's masking of a CRC (rotate right by 15 bits, add a constant)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The masked CRC-32C that TFRecord files store after the length and after the payload."""
    return mask_crc(crc32c(data))
