"""Every relative link in the repository's Markdown files points to a file that exists, and every ``#anchor`` into
a Markdown file names one of its headings (GitHub's heading ids), so that moving a section cannot leave a dead
link behind."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r'!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+"[^"]*")?\)')
FENCE = re.compile(r'^(```|~~~)')


#: Folders of a checkout that hold no project documentation (environments, data, outputs).
SKIP_DIRS = {'.git', '.venv', '.venv-waymo', 'data', 'work_dirs', 'node_modules'}


def markdown_files() -> list[Path]:
    """The Markdown files git tracks or would track (untracked but not ignored); outside a git checkout, every
    ``*.md`` below the root but in :data:`SKIP_DIRS`."""
    try:
        out = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '*.md'], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        return sorted(ROOT / line for line in out.splitlines() if (ROOT / line).is_file())
    except (OSError, subprocess.CalledProcessError):
        return sorted(p for p in ROOT.rglob('*.md') if not SKIP_DIRS & set(p.relative_to(ROOT).parts[:-1]))


def prose_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` outside fenced code blocks, inline code spans blanked."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, re.sub(r'`[^`]*`', '``', line)))
    return lines


def heading_ids(path: Path) -> set[str]:
    """GitHub's ids of the headings of ``path``: lower case, punctuation other than ``-`` and ``_`` dropped, spaces
    to ``-``, repeats numbered ``-1``, ``-2``, ..."""
    ids: set[str] = set()
    fenced = False
    for line in path.read_text(encoding='utf-8').splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if match:
            slug = re.sub(r'[^\w\- ]', '', match.group(1).strip().lower()).replace(' ', '-')
            candidate, n = slug, 0
            while candidate in ids:
                n += 1
                candidate = f'{slug}-{n}'
            ids.add(candidate)
    return ids


def test_heading_ids_follow_github(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('# Measurements\n\n## `combine` against TorchJD and LibMTL\n\n```\n# not a heading\n```\n\n'
                    '## ImageNet32 -> CIFAR-100 transfer, synthetic sets (600 iterations)\n\n## Notes\n\n## Notes\n')
    assert heading_ids(page) == {'measurements', 'combine-against-torchjd-and-libmtl',
                                 'imagenet32---cifar-100-transfer-synthetic-sets-600-iterations', 'notes', 'notes-1'}


@pytest.mark.parametrize('path', markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    dead = []
    for number, line in prose_lines(path.read_text(encoding='utf-8')):
        for target in LINK.findall(line):
            if re.match(r'[a-z][a-z0-9+.-]*:', target):   # http:, https:, mailto: ...
                continue
            file_part, _, anchor = target.partition('#')
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.exists():
                dead.append(f'{path.relative_to(ROOT)}:{number}: {target} (no such file)')
            elif anchor and resolved.suffix == '.md' and anchor not in heading_ids(resolved):
                dead.append(f'{path.relative_to(ROOT)}:{number}: {target} (no heading #{anchor} in {resolved.name})')
    assert not dead, 'dead links:\n' + '\n'.join(dead)
