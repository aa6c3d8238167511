"""Atomic outputs: complete files only, usual permissions, nothing left behind on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from enlighten_ray.io.atomic import atomic_output, is_partial


def test_output_appears_only_when_complete_with_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.png"
    old = os.umask(0o022)
    try:
        with atomic_output(target) as tmp:
            assert tmp.suffix == ".png" and is_partial(tmp) and not target.exists()
            tmp.write_bytes(b"data")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"data"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_or_interrupt_leaves_the_old_file_and_no_temporary(tmp_path: Path, error: type) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old")
    with pytest.raises(error), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise error()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
