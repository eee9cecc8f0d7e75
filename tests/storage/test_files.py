"""storage/files.py: the one writer of files (atomic, no-follow, no-overwrite, owner-only)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from tidings.storage.files import (
    FileError,
    atomic_writer,
    create_private_file,
    make_private_dir,
    read_private,
    write_file,
)


def test_a_new_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_file(tmp_path / "a", b"data")
        folder = make_private_dir(tmp_path / "x" / "y")
    finally:
        os.umask(old)
    assert (tmp_path / "a").read_bytes() == b"data"
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_nothing_at_the_target_is_overwritten_or_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    for target in (victim, dangling):
        with pytest.raises(FileError) as caught:
            write_file(target, b"new")
        assert caught.value.code == "exists"
    assert victim.read_bytes() == b"precious" and not (tmp_path / "nowhere").exists()
    link = tmp_path / "link"
    link.symlink_to(victim)
    write_file(link, b"new", replace=True)  # the name is replaced, the file it named is not written
    assert victim.read_bytes() == b"precious" and link.read_bytes() == b"new" and not link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "link", "victim"]


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "archive"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(target, replace=True) as fh:
        fh.write(b"half")
        raise RuntimeError("the disk went away")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["archive"]


def test_inside_a_folder_is_refused_through_symlinks(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "alias").symlink_to(home)
    for target in (home / "store.db", tmp_path / "alias" / "store.db", home / "sub" / "x"):
        with pytest.raises(FileError) as caught:
            write_file(target, b"x", replace=True, outside=home)
        assert caught.value.code == "inside_home"
    write_file(tmp_path / "backup", b"x", outside=home)


def test_the_first_creator_wins(tmp_path: Path) -> None:
    path = tmp_path / "key"
    assert create_private_file(path, b"first") is True
    assert create_private_file(path, b"second") is False
    assert read_private(path) == b"first"


def test_a_secret_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_file(path, b"secret")
    for mode in (0o640, 0o604, 0o620):
        path.chmod(mode)
        with pytest.raises(FileError, match=rf"\(mode 0{mode:o}\); run 'chmod 600 {path}'") as caught:
            read_private(path)
        assert caught.value.code == "unsafe_permissions"
    path.chmod(0o400)
    assert read_private(path) == b"secret"
    with pytest.raises(FileNotFoundError):
        read_private(tmp_path / "missing")
