"""CRC-32C: google-crc32c (the compiled path) against the NumPy implementation (the oracle), and the fallback."""
import os
import subprocess
import sys

import numpy as np
import pytest

from graddrop_mtl.det3d.waymo import crc as crc_mod


def test_google_crc32c_is_the_backend():
    """google-crc32c is a runtime requirement: in the project's environment it imports with its C code."""
    import google_crc32c
    assert google_crc32c.implementation == 'c'
    assert crc_mod.BACKEND == 'google-crc32c'


@pytest.mark.parametrize('n', [0, 1, 7, 100, 4095, 4096, 4097, 65_536 + 3, 1_000_003])
def test_crc32c_matches_numpy_oracle(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    expected = crc_mod.crc32c_numpy(data)
    assert crc_mod.crc32c(data) == expected
    # every buffer type the TFRecord reader and writer pass
    assert crc_mod.crc32c(bytearray(data)) == expected
    assert crc_mod.crc32c(memoryview(data)) == expected
    assert crc_mod.crc32c(memoryview(np.frombuffer(data, np.uint8))) == expected
    # a running checksum continued from a previous result
    k = n // 3
    assert crc_mod.crc32c(data[k:], crc_mod.crc32c(data[:k])) == expected
    assert crc_mod.crc32c_numpy(data[k:], crc_mod.crc32c_numpy(data[:k])) == expected
    assert crc_mod.masked_crc32c(data) == crc_mod.mask_crc(expected)


def test_known_values_both_paths():
    for fn in (crc_mod.crc32c, crc_mod.crc32c_numpy):
        assert fn(b'123456789') == 0xE3069283
        assert fn(bytes(32)) == 0x8A9136AA
        assert fn(b'') == 0
    assert crc_mod.masked_crc32c(b'123456789') == 0xC78AB0E5


def test_numpy_fallback_switch(repo_root):
    """GRADDROP_CRC32C=numpy selects the NumPy path (what the benchmark compares against)."""
    code = ('from graddrop_mtl.det3d.waymo import crc; print(crc.BACKEND, crc.crc32c(b"123456789") == 0xE3069283, '
            'crc._GOOGLE is None)')
    env = dict(os.environ, GRADDROP_CRC32C='numpy', PYTHONPATH=repo_root)
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, cwd=repo_root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['numpy', 'True', 'True']
