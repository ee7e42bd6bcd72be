import errno
import os
import stat
import subprocess
import sys

import pytest

from glag.data.atomic import _host, atomic_dir, atomic_file, target_of
from glag.data.errors import GlagError


def test_atomic_file_only_appears_on_success(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(ValueError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise ValueError
    assert list(tmp_path.iterdir()) == []
    with atomic_file(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and len(list(tmp_path.iterdir())) == 1


def test_atomic_dir_never_merges_two_writers(tmp_path):
    target = tmp_path / "run"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(OSError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]


def test_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_dir(tmp_path / "run") as tmp:
            (tmp / "a").write_text("1")
        with atomic_file(tmp_path / "f.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o750     # mkdtemp alone gives 0700
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o640


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "the disk is full"), (errno.EFBIG, "ulimit -f"),
                                          (errno.EDQUOT, "quota")])
def test_a_full_disk_is_one_line_naming_the_file_and_nothing_stays(code, reason, tmp_path):
    target = tmp_path / "new" / "deeper" / "out.json"
    with pytest.raises(GlagError) as info:
        with atomic_file(target, need_bytes=5000):
            raise OSError(code, os.strerror(code))
    msg = str(info.value)
    assert "\n" not in msg and str(target) in msg and reason in msg and "5,000 bytes" in msg
    assert list(tmp_path.iterdir()) == []                       # the temp and the folders it made are gone
    with pytest.raises(GlagError, match=r"run/config\.json: not written, the disk is full"):
        with atomic_dir(tmp_path / "run") as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "config.json"))
    assert list(tmp_path.iterdir()) == []


def test_other_errors_pass_through_and_still_clean_up(tmp_path):
    with pytest.raises(OSError) as info:
        with atomic_file(tmp_path / "x"):
            raise OSError(errno.EIO, "I/O error")
    assert not isinstance(info.value, GlagError) and list(tmp_path.iterdir()) == []


def test_a_killed_writers_temp_is_removed_by_the_next_writer_with_one_line(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.json.{int(dead.stdout)}@{_host()}.abcd1234.tmp"
    stale.write_text("half")
    with atomic_file(tmp_path / "other.json") as tmp:        # any writer in the folder
        tmp.write_text("{}")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "removed 1 temp file(s) of killed processes" in err[0] and stale.name in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]


def test_temp_names_carry_the_pid_and_map_back_to_their_target(tmp_path):
    with atomic_file(tmp_path / "a.b.h5") as tmp:
        assert f".{os.getpid()}@" in tmp.name and target_of(tmp) == tmp_path / "a.b.h5"
    with atomic_dir(tmp_path / "glag-0.5") as tmp:
        assert target_of(tmp) == tmp_path / "glag-0.5"
    assert target_of(tmp_path / "plain.json") == tmp_path / "plain.json"
