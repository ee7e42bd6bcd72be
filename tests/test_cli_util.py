import json

import pytest

from glag.cli.util import resolve_bank
from glag.data.errors import GlagError
from glag.data.layout import bank_path, current_bank, set_current
from tests.conftest import write_tiny_bank


def test_bank_found_by_dataset_alias_or_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("DATASET", raising=False)
    with pytest.raises(GlagError, match="no bank"):
        resolve_bank(None, None, tmp_path)
    inat = write_tiny_bank(bank_path(tmp_path, "inat2018", None, "graloss", 0), dataset="inat2018")
    assert resolve_bank(None, None, tmp_path) == inat                  # the only bank there is
    assert resolve_bank(None, "inat", tmp_path) == inat                # the short name users type
    monkeypatch.setenv("DATASET", "inat")                              # what `make ... DATASET=inat` passes
    assert resolve_bank(None, None, tmp_path) == inat
    monkeypatch.delenv("DATASET")
    write_tiny_bank(bank_path(tmp_path, "digits", 10, "ce", 0), dataset="digits")
    with pytest.raises(GlagError, match="several banks.*digits.*inat2018"):
        resolve_bank(None, None, tmp_path)
    with pytest.raises(GlagError, match="make features DATASET=cifar100"):
        resolve_bank(None, "cifar100", tmp_path)
    assert resolve_bank("x.h5", "digits", tmp_path).name == "x.h5"      # --bank always wins


def test_the_current_bank_wins_and_is_said(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DATASET", raising=False)
    ce, gra = (write_tiny_bank(bank_path(tmp_path, "digits", 10, loss, 0), dataset="digits") for loss in ("ce", "graloss"))
    other = write_tiny_bank(bank_path(tmp_path, "fashion-mnist", 100, "ce", 0), dataset="fashion-mnist")
    with pytest.raises(GlagError, match="2 banks of this dataset"):
        resolve_bank(None, "digits", tmp_path)
    set_current(gra, tmp_path)
    assert json.loads((tmp_path / "current.json").read_text())["bank"] == str(gra.resolve())
    assert resolve_bank(None, None, tmp_path) == gra.resolve() and "current bank" in capsys.readouterr().err
    assert resolve_bank(None, "digits", tmp_path) == gra.resolve()     # current, and of the dataset asked for
    assert resolve_bank(None, "fashion-mnist", tmp_path) == other      # another dataset: its only bank
    gra.unlink()
    assert current_bank(tmp_path) is None
    assert resolve_bank(None, "digits", tmp_path) == ce                 # the pointer names a bank that is gone
