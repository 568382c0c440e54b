"""keep_freed_memory: large tensors made again after they were freed reuse the process's memory (no page faults)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Sixteen steps that each make two 64 MiB tensors (32,768 pages of 4 KiB) and free them; print whether the setting
# is on and the minor page faults of each of the last eight steps. glibc takes a few steps to settle (a 64-byte
# aligned request does not fit the hole its predecessor left until freed holes merge), and now and then later
# re-faults one tensor's pages; with its default every step faults every page again.
PROBE = r'''
import resource
import torch
from graddrop_mtl.engine.memory import keep_freed_memory
on = keep_freed_memory()
again = keep_freed_memory()
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(1 << 24)
    y = x * 2
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del x, y
print(on, again, *faults[-8:])
'''
PAGES_PER_STEP = 2 * (64 << 20) // 4096


def run_probe(flag: str | None) -> tuple[bool, bool, list[int]]:
    env = {k: v for k, v in os.environ.items() if k != 'GRADDROP_KEEP_FREED_MEMORY'}
    if flag is not None:
        env['GRADDROP_KEEP_FREED_MEMORY'] = flag
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    out = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True, text=True, check=True)
    on, again, *faults = out.stdout.split()
    return on == 'True', again == 'True', [int(f) for f in faults]


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt: Linux only')
def test_freed_memory_is_reused():
    on, again, faults = run_probe(None)
    assert on and again
    # reused memory: at most a quarter of the eight steps' pages fault again (in practice none, or one tensor's)
    assert sum(faults) < len(faults) * PAGES_PER_STEP // 4, faults


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt: Linux only')
def test_switched_off_by_the_environment():
    on, again, faults = run_probe('0')
    assert not on and not again
    assert min(faults) >= PAGES_PER_STEP, faults    # glibc's default: fresh mmaps, every page faults every step
