"""The synthetic store (glag-store/2): the fitted generator, its identity, and damaged or foreign stores."""
import h5py
import numpy as np
import pytest

from glag.data.bank import Bank
from glag.data.errors import GlagError
from glag.data.store import GeneratorArrays, Store, StoreWriter, plan_bytes
from tests.conftest import write_tiny_bank

META = dict(feature_space="tukey", tukey_lambda=0.5, beta_init=0.6, gamma=0.0, gamma_mode="isotropic", k=2, seed=0)


def arrays(C=6, D=8, seed=0):
    """A small generator: classes 0-1 factored by QR (N_k > D), the others by their rows; tail 4, 5."""
    rng = np.random.default_rng(seed)
    counts = np.array([20, 12, 6, 4, 3, 2][:C])
    rows = [rng.random((n, D)).astype(np.float32) if n <= D or k >= 4 else None for k, n in enumerate(counts)]
    index = [np.arange(n) + 100 * k if r is not None else None for k, (n, r) in enumerate(zip(counts, rows))]
    qr = {k: np.triu(rng.random((D, D))).astype(np.float32) for k in range(C) if counts[k] > D}
    tail = np.array([4, 5])
    S = int(counts[tail].sum())
    return GeneratorArrays(counts=counts, means=rng.random((C, D)).astype(np.float32), class_rows=rows,
                           class_index=index, qr=qr, tail_classes=tail,
                           sup_classes=rng.integers(0, 4, (S, 2)), sup_weights=rng.random((S, 2)).astype(np.float32),
                           lam=0.5)


def write_store(path, bank, dtype="float32", gen=None):
    gen = gen or arrays()
    with StoreWriter(path, bank=bank, dtype=dtype, meta=META, config={"k": 2}) as w:
        w.set_generator(gen, np.arange(6), np.arange(len(gen.sup_classes)))
    return path


def test_store_round_trip(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    gen = arrays()
    store = Store(write_store(tmp_path / "s.h5", bank, gen=gen), bank)
    back = store.generator()
    assert store.attrs["beta_init"] == 0.6 and store.config == {"k": 2} and list(store.tail_classes) == [4, 5]
    assert np.array_equal(store.need, np.arange(6)) and np.array_equal(back.counts, gen.counts)
    assert np.array_equal(back.means, gen.means) and sorted(back.qr) == [0, 1]
    for k in range(6):
        assert (back.class_rows[k] is None) == (gen.class_rows[k] is None)
        if gen.class_rows[k] is not None:
            assert np.array_equal(back.class_rows[k], gen.class_rows[k])
            assert np.array_equal(back.class_index[k], gen.class_index[k])
    assert np.array_equal(back.qr[1], gen.qr[1]) and store.supports["classes"].shape == (5, 2)
    assert store.generator_bytes() > 0 and store.sample() is None


def test_float16_store_is_smaller_and_the_plan_says_its_size(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    s32 = write_store(tmp_path / "s32.h5", bank).stat().st_size
    s16 = write_store(tmp_path / "s16.h5", bank, dtype="float16").stat().st_size
    assert Store(tmp_path / "s16.h5").generator().class_rows[2].dtype == np.float16
    assert s16 < s32
    counts, tail = np.array([20, 12, 6, 4, 3, 2]), np.array([0, 0, 0, 0, 1, 1], bool)
    planned = plan_bytes(counts, tail, 8, 2, "float32")
    with h5py.File(tmp_path / "s32.h5", "r") as f:
        data = sum(f[n].size * f[n].dtype.itemsize for n in ("factors/rows", "factors/qr", "classes/means"))
    assert data <= planned < s32                                         # the arrays, not the HDF5 overhead


def test_store_from_another_bank_refused(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5", seed=0))
    other = Bank(write_tiny_bank(tmp_path / "other.h5", seed=1))
    path = write_store(tmp_path / "s.h5", bank)
    with pytest.raises(GlagError, match="another bank"):
        Store(path, other)


def test_a_generator_of_other_shapes_is_refused(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    wide = Bank(write_tiny_bank(tmp_path / "wide.h5", D=9))
    path = write_store(tmp_path / "s.h5", bank)
    with h5py.File(path, "r+") as f:                                    # a store pointed at a bank of another D
        f.attrs["bank_fingerprint"] = wide.fingerprint
        del f.attrs["attrs_digest"]                                      # (an edit the digest would catch)
    with pytest.raises(GlagError, match="6 classes x 8 features"):
        Store(path, wide)


def test_unfinished_store_leaves_nothing(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    with pytest.raises(GlagError, match="generator was never set"):
        with StoreWriter(tmp_path / "s.h5", bank=bank, dtype="float32", meta=META, config={}):
            pass
    assert not (tmp_path / "s.h5").exists()


def test_bad_dtype_named(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    with pytest.raises(GlagError, match="--dtype"):
        StoreWriter(tmp_path / "s.h5", bank=bank, dtype="int8", meta=META, config={})


def test_store_fingerprint_follows_content_and_verifies(tmp_path):
    from glag.data.verify import verify
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    a, b = write_store(tmp_path / "a.h5", bank), write_store(tmp_path / "b.h5", bank)
    c = write_store(tmp_path / "c.h5", bank, dtype="float16")
    prints = [Store(p).attrs["fingerprint"] for p in (a, b, c)]
    assert prints[0] == prints[1] != prints[2] and len(prints[0]) == 32
    assert verify(a) == ""
    with h5py.File(a, "r+") as f:
        f["factors/rows"][0, 0] = 5
    with pytest.raises(GlagError, match="does not match its fingerprint"):
        verify(a)


@pytest.mark.parametrize("name", ["factors/rows", "supports/weights", "factors/row_offsets", "tail_classes",
                                  "classes/need"])
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
        f["factors/row_offsets"][-1] = 99
    with pytest.raises(GlagError, match="row_offsets"):
        Store(path, bank).generator()


def test_old_format_store_names_the_rebuild(tmp_path):
    bank = Bank(write_tiny_bank(tmp_path / "bank.h5"))
    path = write_store(tmp_path / "s.h5", bank)
    with h5py.File(path, "r+") as f:
        f.attrs["schema"] = "glag-store/1"
    with pytest.raises(GlagError, match=r"old format.*`glag-generate --bank .*bank.h5 --force`"):
        Store(path, bank)
