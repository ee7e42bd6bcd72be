import pytest

from glag.data.cliutil import resolve_bank
from glag.data.errors import GlagError
from tests.conftest import write_tiny_bank


def test_bank_found_by_dataset_alias_or_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("DATASET", raising=False)
    with pytest.raises(GlagError, match="no bank"):
        resolve_bank(None, None, tmp_path)
    inat = write_tiny_bank(tmp_path / "inat2018" / "bank.h5")
    assert resolve_bank(None, None, tmp_path) == inat                  # the only bank there is
    assert resolve_bank(None, "inat", tmp_path) == inat                # the short name users type
    monkeypatch.setenv("DATASET", "inat")                              # what `make ... DATASET=inat` exports
    assert resolve_bank(None, None, tmp_path) == inat
    monkeypatch.delenv("DATASET")
    write_tiny_bank(tmp_path / "digits" / "bank.h5")
    with pytest.raises(GlagError, match="several banks.*digits.*inat2018"):
        resolve_bank(None, None, tmp_path)
    with pytest.raises(GlagError, match="make features DATASET=cifar100"):
        resolve_bank(None, "cifar100", tmp_path)
    assert resolve_bank("x.h5", "digits", tmp_path).name == "x.h5"      # --bank always wins
