"""The one atomic write: the old file or the new one, never half of one, never a temp left."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from mnist_lab.core.errors import UserError
from mnist_lab.core.files import replacing


def test_the_new_file_replaces_the_old_and_no_temp_is_left(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with replacing(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name == ".metrics.tmp.json"
        tmp.write_text("new")
        assert target.read_text() == "old"  # not before the block ends
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_full_disk_is_one_user_error_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(UserError) as raised, replacing(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(raised.value) == f"cannot write {target}: No space left on device"
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_any_failure_removes_the_temp_and_passes_through(tmp_path: Path) -> None:
    target = tmp_path / "f"
    with pytest.raises(KeyboardInterrupt), replacing(target, tmp_path / ".f.x.part") as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    with pytest.raises(OSError), replacing(target, user_error=False) as tmp:
        tmp.write_text("half")
        raise OSError(errno.EIO, "I/O error")
    assert list(tmp_path.iterdir()) == []
