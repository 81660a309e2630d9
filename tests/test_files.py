"""Atomic writes keep the permissions a plain write would give: a team's shared index stays readable to the team."""

from __future__ import annotations

import stat
import subprocess
import sys

from georet.files import atomic_write_text

WRITE_UNDER_UMASK = """
import os, sys
from georet.files import atomic_write_text
os.umask(int(sys.argv[2], 8))
atomic_write_text(sys.argv[1], "{}")
"""


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_follows_the_umask_and_a_replaced_one_keeps_its_mode(tmp_path):
    for umask, expected in (("022", 0o644), ("027", 0o640), ("077", 0o600)):
        target = tmp_path / f"georet-{umask}.json"
        subprocess.run([sys.executable, "-c", WRITE_UNDER_UMASK, str(target), umask], check=True)
        assert mode(target) == expected and target.read_text() == "{}"
    shared = tmp_path / "shared.json"
    shared.write_text("old")
    shared.chmod(0o664)  # group-writable, as a team's index folder may be
    atomic_write_text(shared, "new")
    assert mode(shared) == 0o664 and shared.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left
