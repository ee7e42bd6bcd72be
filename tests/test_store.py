import h5py
import numpy as np
import pytest

from glag.data.bank import Bank
from glag.data.errors import GlagError
from glag.data.store import Store, StoreWriter, store_bytes
from tests.conftest import write_tiny_bank

META = dict(feature_space="tukey", tukey_lambda=0.5, beta_init=0.6, gamma=0.0, gamma_mode="isotropic", k=2, seed=0)


def write_store(path, bank, epochs=3, dtype="float32"):
    rng = np.random.default_rng(0)
    with StoreWriter(path, bank=bank, feature_dim=bank.feature_dim, dtype=dtype, meta=META, config={"k": 2}) as w:
        w.set_supports([4, 5], [0, 1], [[0, 1], [0, 2]], [[1.0, 2.0], [3.0, 4.0]])
        for e in range(epochs):
            n = 5 + e
            w.add_rows(rng.random((n, 8)), rng.random((n, 8)), np.full(n, 4 + e % 2), np.arange(n))
            w.end_epoch()
    return path


def test_store_round_trip_by_epoch(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    store = Store(write_store(tmp_path / "s.h5", bank), bank)
    assert store.epochs == 3 and list(store.tail_classes) == [4, 5]
    assert [len(store.epoch_rows(e)["label"]) for e in range(4)] == [5, 6, 7, 5]  # cycles after the last
    assert store.attrs["beta_init"] == 0.6 and store.config == {"k": 2}
    assert store.supports["classes"].shape == (2, 2)
    assert store.epoch_rows(1)["a"].dtype == np.float32


def test_float16_store_is_smaller(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    s32 = write_store(tmp_path / "s32.h5", bank).stat().st_size
    s16 = write_store(tmp_path / "s16.h5", bank, dtype="float16").stat().st_size
    assert Store(tmp_path / "s16.h5").epoch_rows(0)["a"].dtype == np.float32
    assert s16 < s32
    assert store_bytes(10, 8, "float16") < store_bytes(10, 8, "float32")


def test_store_from_another_bank_refused(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5", seed=0))
    other = Bank(write_tiny_bank(tmp_path / "other.h5", seed=1))
    path = write_store(tmp_path / "s.h5", bank)
    with pytest.raises(GlagError, match="another bank"):
        Store(path, other)


def test_unfinished_store_leaves_nothing(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    with pytest.raises(GlagError, match="supports"):
        with StoreWriter(tmp_path / "s.h5", bank=bank, feature_dim=8, dtype="float32", meta=META, config={}):
            pass
    assert not (tmp_path / "s.h5").exists()


def test_bad_dtype_named(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    with pytest.raises(GlagError, match="--dtype"):
        StoreWriter(tmp_path / "s.h5", bank=bank, feature_dim=8, dtype="int8", meta=META, config={})


def test_store_fingerprint_follows_content_and_verifies(tmp_path):
    from glag.data.verify import verify
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    a, b = write_store(tmp_path / "a.h5", bank), write_store(tmp_path / "b.h5", bank)
    c = write_store(tmp_path / "c.h5", bank, dtype="float16")
    prints = [Store(p).attrs["fingerprint"] for p in (a, b, c)]
    assert prints[0] == prints[1] != prints[2] and len(prints[0]) == 32
    assert verify(a) == ""
    with h5py.File(a, "r+") as f:
        f["rows/label"][0] = 5
    with pytest.raises(GlagError, match="does not match its fingerprint"):
        verify(a)


def test_a_store_from_before_fingerprints_is_read_whole(tmp_path):
    from glag.data.verify import verify
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    path = write_store(tmp_path / "s.h5", bank)
    with h5py.File(path, "r+") as f:
        del f.attrs["fingerprint"]
    assert "before fingerprints" in verify(path)


@pytest.mark.parametrize("name", ["rows/a", "supports/weights", "epoch_offsets", "tail_classes"])
def test_a_missing_store_dataset_is_named(name, tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    path = write_store(tmp_path / "s.h5", bank)
    with h5py.File(path, "r+") as f:
        del f[name]
    with pytest.raises(GlagError, match=f"dataset {name} missing inside the store"):
        Store(path, bank)


def test_offsets_that_do_not_cover_the_rows_are_refused(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    path = write_store(tmp_path / "s.h5", bank)
    with h5py.File(path, "r+") as f:
        f["epoch_offsets"][-1] = 99
    with pytest.raises(GlagError, match="epoch_offsets"):
        Store(path, bank)
