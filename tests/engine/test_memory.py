"""keep_freed_memory: a large tensor made again after it was freed reuses the process's memory (no page faults)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Eight steps that each make two 64 MiB tensors and free them; print whether the setting is on and the minor page
# faults of the last three steps. (glibc may need a few steps to settle: a 64-byte aligned request does not fit in
# the hole its predecessor left until freed holes merge.)
PROBE = r'''
import resource
import torch
from graddrop_mtl.engine.memory import keep_freed_memory
on = keep_freed_memory()
again = keep_freed_memory()
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(1 << 24)
    y = x * 2
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del x, y
print(on, again, max(faults[-3:]))
'''


def run_probe(flag: str | None) -> tuple[bool, bool, int]:
    env = {k: v for k, v in os.environ.items() if k != 'GRADDROP_KEEP_FREED_MEMORY'}
    if flag is not None:
        env['GRADDROP_KEEP_FREED_MEMORY'] = flag
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    out = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True, text=True, check=True)
    on, again, faults = out.stdout.split()
    return on == 'True', again == 'True', int(faults)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt: Linux only')
def test_freed_memory_is_reused():
    on, again, faults = run_probe(None)
    assert on and again
    assert faults < 1024          # 2 x 64 MiB is 32,768 pages of 4 KiB: reused memory faults on (almost) none


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt: Linux only')
def test_switched_off_by_the_environment():
    on, again, faults = run_probe('0')
    assert not on and not again
    assert faults > 16384         # glibc's default: each tensor is a fresh mmap, every page faults again
