import h5py
import numpy as np
import pytest

from data.bank import SCHEMA, Bank, BankWriter, find_banks
from data.errors import GlagError
from tests.conftest import write_tiny_bank


def test_round_trip_keeps_arrays_and_config(tmp_path):
    path = write_tiny_bank(tmp_path / "b.h5", config={"lr": 0.1})
    with Bank(path) as bank:
        assert bank.num_classes == 6 and bank.feature_dim == 8
        assert bank.config["lr"] == 0.1 and bank.splits == ("train", "val", "test")
        train = bank.load("train", ("features", "labels", "logits", "index"))
        assert train["features"].shape == (137, 8) and train["logits"].shape == (137, 6)
        assert np.array_equal(np.bincount(train["labels"]), bank.train_counts)
        W, b = bank.head
        assert np.allclose(train["logits"], train["features"] @ W.T + b, atol=1e-5)
        assert bank.metrics["test"]["overall"] == 0.5
        chunks = [c["features"] for _, c in bank.iter_chunks("train", chunk_rows=50)]
        assert np.array_equal(np.concatenate(chunks), train["features"])
        assert len(bank.fingerprint) == 32


def test_fingerprint_follows_content(tmp_path):
    a = Bank(write_tiny_bank(tmp_path / "a.h5", seed=0)).fingerprint
    b = Bank(write_tiny_bank(tmp_path / "b.h5", seed=0)).fingerprint
    c = Bank(write_tiny_bank(tmp_path / "c.h5", seed=1)).fingerprint
    assert a == b != c


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "bank.h5"
    with pytest.raises(RuntimeError):
        with BankWriter(path, dataset="x", backbone="b", loss="ce", class_names=["a", "b"], train_counts=[2, 1],
                        feature_dim=3, config={}) as w:
            w.add_rows("train", np.ones((3, 3)), [0, 0, 1], np.zeros((3, 2)), [0, 1, 2])
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_non_finite_features_refused(tmp_path):
    with pytest.raises(GlagError, match="non-finite"):
        with BankWriter(tmp_path / "b.h5", dataset="x", backbone="b", loss="ce", class_names=["a"],
                        train_counts=[1], feature_dim=2, config={}) as w:
            w.add_rows("train", [[np.nan, 1.0]], [0], [[0.0]], [0])
    assert not (tmp_path / "b.h5").exists()


def test_truncated_file_refused_with_advice(tmp_path):
    path = write_tiny_bank(tmp_path / "b.h5")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(GlagError, match="truncated"):
        Bank(path)


def test_other_schema_refused(tmp_path):
    path = write_tiny_bank(tmp_path / "b.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["schema"] = "glag-bank/0"
    with pytest.raises(GlagError, match="schema"):
        Bank(path)
    assert SCHEMA != "glag-bank/0"


def test_missing_bank_says_what_to_do(tmp_path):
    with pytest.raises(GlagError, match="make features"):
        Bank(tmp_path / "nope.h5")


def test_damaged_shapes_refused(tmp_path):
    path = write_tiny_bank(tmp_path / "b.h5")
    with h5py.File(path, "r+") as f:
        del f["val/logits"]
        f["val/logits"] = np.zeros((3, 6), np.float32)
    with pytest.raises(GlagError, match="wrong shapes"):
        Bank(path)


def test_many_readers_at_once(tmp_path):
    path = write_tiny_bank(tmp_path / "b.h5")
    readers = [Bank(path) for _ in range(4)]
    assert len({r.fingerprint for r in readers}) == 1
    for r in readers:
        r.close()


def test_find_banks(tmp_path):
    write_tiny_bank(tmp_path / "digits" / "bank.h5")
    write_tiny_bank(tmp_path / "cifar" / "ce" / "bank.h5")
    assert len(find_banks(tmp_path)) == 2
