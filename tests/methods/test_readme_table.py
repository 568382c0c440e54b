"""README.md's methods table lists every built-in registered method by its config line, under one of the kinds."""
from __future__ import annotations

import os.path as osp
import re

from graddrop_mtl.methods import METHODS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_every_registered_method_has_a_row():
    text = open(osp.join(ROOT, 'README.md')).read()
    section = text[text.index('## Methods'):text.index('## Use it on your own')]
    for kind in ('Gradient methods on the per-task gradients', 'Gram-matrix methods', 'Loss weightings'):
        assert f'**{kind}**' in section
    listed = set(re.findall(r"type='(\w+)'", section))
    builtin = {n for n, c in METHODS.items() if c.__module__.startswith('graddrop_mtl.methods')}
    assert builtin <= listed, f'README.md has no row for {sorted(builtin - listed)}'
