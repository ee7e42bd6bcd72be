import pytest

from glag.data.atomic import atomic_dir, atomic_file


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
