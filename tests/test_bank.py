import h5py
import numpy as np
import pytest

from glag.data.bank import SCHEMA, Bank, BankWriter, find_banks
from glag.data.errors import GlagError
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
    with pytest.raises(GlagError, match="val/logits has shape"):
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


# ---- schema 2: augmented views of the train split ----------------------------------------------

def write_viewed_bank(path, V=2, dtype="float16", logits=True, seed=0, C=3, D=4, N=7):
    """A small bank with V views; view v's rows are train rows + v (so each view is known exactly)."""
    rng = np.random.default_rng(seed)
    feats, labels = rng.uniform(0, 2, (N, D)).astype(np.float32), np.arange(N) % C
    W, b = rng.standard_normal((C, D)).astype(np.float32), np.zeros(C, np.float32)
    with BankWriter(path, dataset="x", backbone="b", loss="ce", class_names=list("abc")[:C],
                    train_counts=np.bincount(labels, minlength=C), feature_dim=D, config={"views": V},
                    views=V, views_dtype=dtype, views_logits=logits) as w:
        w.add_rows("train", feats, labels, feats @ W.T + b, np.arange(N))
        w.add_rows("test", feats, labels, feats @ W.T + b, np.arange(N))
        for v in range(V):
            for rows in (slice(0, 3), slice(3, N)):                      # any number of appends per view
                f = feats[rows] + v
                w.add_view_rows(v, f, f @ W.T + b if logits else None)
        w.set_head(W, b)
    return path, feats, W


def test_views_round_trip_as_float32(tmp_path):
    path, feats, W = write_viewed_bank(tmp_path / "b.h5")
    with Bank(path) as bank:
        assert bank.h5.attrs["schema"] == SCHEMA == "glag-bank/2"
        assert bank.views == 2 and bank.views_dtype == "float16" and bank.has_view_logits
        views = bank.load_views()
        assert views["features"].shape == (2, 7, 4) and views["logits"].shape == (2, 7, 3)
        assert views["features"].dtype == np.float32 == views["logits"].dtype
        for v in range(2):
            np.testing.assert_allclose(views["features"][v], feats + v, rtol=1e-3)
            np.testing.assert_allclose(views["logits"][v], (feats + v) @ W.T, rtol=1e-2, atol=1e-2)
        assert bank.load_views(("features",), count=1)["features"].shape == (1, 7, 4)
        assert bank.view_bytes() == 2 * 7 * (4 + 3) * 4 and bank.view_bytes(1, ("logits",)) == 7 * 3 * 4
        with pytest.raises(GlagError, match="--dump-only --views 3"):
            bank.load_views(count=3)


def test_views_without_logits(tmp_path):
    path, _, _ = write_viewed_bank(tmp_path / "b.h5", V=1, dtype="float32", logits=False)
    with Bank(path) as bank:
        assert bank.views == 1 and bank.views_dtype == "float32" and not bank.has_view_logits
        assert bank.load_views(("features",))["features"].shape == (1, 7, 4)
        with pytest.raises(GlagError, match="no logits"):
            bank.load_views(("features", "logits"))
        with pytest.raises(GlagError, match="no logits"):
            bank.view_bytes(fields=("logits",))


def test_fingerprint_covers_the_views(tmp_path):
    a = Bank(write_viewed_bank(tmp_path / "a.h5")[0]).fingerprint
    b = Bank(write_viewed_bank(tmp_path / "b.h5")[0]).fingerprint
    c = Bank(write_viewed_bank(tmp_path / "c.h5", V=1)[0]).fingerprint
    d = Bank(write_viewed_bank(tmp_path / "d.h5", dtype="float32")[0]).fingerprint
    assert a == b and len({a, c, d}) == 3


def test_schema_1_bank_still_opens_without_views(tmp_path):
    """A schema-1 bank is a schema-2 bank without train_views: the same arrays, the same fingerprint."""
    path = write_tiny_bank(tmp_path / "b.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["schema"] = "glag-bank/1"
        del f.attrs["attrs_digest"]                                      # schema-1 banks had no attribute digest
    with Bank(path) as bank:
        assert bank.views == 0 and bank.views_dtype is None and not bank.has_view_logits
        assert bank.load("train")["features"].shape == (137, 8)
        with pytest.raises(GlagError, match=r"glag-extract --dump-only --views V"):
            bank.load_views()
        with pytest.raises(GlagError, match="no augmented train views"):
            bank.view_bytes(1, ("features",))


def test_view_rows_out_of_order_or_missing_are_refused(tmp_path):
    kwargs = dict(dataset="x", backbone="b", loss="ce", class_names=["a", "b"], train_counts=[2, 1],
                  feature_dim=3, config={}, views=2)
    rows = (np.ones((3, 3)), [0, 0, 1], np.zeros((3, 2)), [0, 1, 2])
    with pytest.raises(GlagError, match=r"train_views \(3 of 6 rows\)"):    # closing without view 1
        with BankWriter(tmp_path / "a.h5", **kwargs) as w:
            w.add_rows("train", *rows)
            with pytest.raises(ValueError, match="out of order"):
                w.add_view_rows(1, np.ones((3, 3)), np.zeros((3, 2)))    # view 0 first
            with pytest.raises(ValueError, match="logits missing"):
                w.add_view_rows(0, np.ones((3, 3)))
            w.add_view_rows(0, np.ones((3, 3)), np.zeros((3, 2)))
            with pytest.raises(ValueError, match="after its views"):
                w.add_rows("train", *rows)
            w.add_rows("test", *rows)
            w.set_head(np.zeros((2, 3)), np.zeros(2))
    assert list(tmp_path.iterdir()) == []


def test_float16_overflow_names_float32(tmp_path):
    with pytest.raises(GlagError, match="--views-dtype float32"):
        with BankWriter(tmp_path / "b.h5", dataset="x", backbone="b", loss="ce", class_names=["a"], train_counts=[1],
                        feature_dim=2, config={}, views=1, views_logits=False) as w:
            w.add_rows("train", [[1.0, 1.0]], [0], [[0.0]], [0])
            w.add_view_rows(0, [[1e6, 1.0]])
    assert list(tmp_path.iterdir()) == []


def test_damaged_view_shapes_refused(tmp_path):
    path, _, _ = write_viewed_bank(tmp_path / "b.h5")
    with h5py.File(path, "r+") as f:
        f["train_views"].attrs["views"] = 3
    with pytest.raises(GlagError, match="train_views"):
        Bank(path)


# ---- checksums, damage and permission messages, the validation cache, glag-verify ---------------

def test_every_numeric_dataset_carries_a_checksum(tmp_path):
    path, _, _ = write_viewed_bank(tmp_path / "b.h5")
    with h5py.File(path, "r") as f:
        numeric = []
        f.visititems(lambda name, obj: numeric.append(obj) if isinstance(obj, h5py.Dataset)
                     and obj.dtype.kind in "fiu" else None)
        assert len(numeric) >= 12 and all(d.fletcher32 for d in numeric)


def test_a_bank_without_checksums_still_opens_and_verifies(tmp_path, monkeypatch):
    from glag.data import bank as bank_module
    from glag.data.verify import verify
    monkeypatch.setattr(bank_module, "CHECKSUM", {})          # as written before Fletcher-32
    path = write_tiny_bank(tmp_path / "old.h5")
    with h5py.File(path, "r") as f:
        assert not f["train/features"].fletcher32
    new = write_tiny_bank(tmp_path / "new.h5")
    monkeypatch.undo()
    with Bank(path) as old, Bank(new) as b:
        assert old.fingerprint == b.fingerprint                   # same content, same fingerprint
        assert np.array_equal(old.load("train")["features"], b.load("train")["features"])
    assert verify(path) == ""


def test_a_corrupted_chunk_is_one_line_naming_the_dataset(tmp_path):
    path = write_tiny_bank(tmp_path / "b.h5")
    with h5py.File(path, "r") as f:
        at = f["val/features"].id.get_chunk_info(0).byte_offset + 8
    data = bytearray(path.read_bytes())
    data[at] ^= 0x5A
    path.write_bytes(bytes(data))
    with Bank(path) as bank:
        bank.load("train")                                         # other datasets read fine
        with pytest.raises(GlagError, match="val/features is corrupted") as info:
            bank.load("val")
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_permission_denied_never_says_delete(tmp_path, monkeypatch):
    path = write_tiny_bank(tmp_path / "b.h5")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Unable to synchronously open file (errno = 13, error message = 'Permission denied')")
    monkeypatch.setattr(h5py, "File", denied)
    with pytest.raises(GlagError) as info:
        Bank(path)
    assert "permission denied" in str(info.value) and "delete" not in str(info.value)


@pytest.mark.parametrize("name", ["classes/train_counts", "train/index", "stage1/classifier/weight", "test/features"])
def test_a_missing_dataset_is_named(name, tmp_path):
    path = write_tiny_bank(tmp_path / "b.h5")
    with h5py.File(path, "r+") as f:
        del f[name]
    with pytest.raises(GlagError, match=f"dataset {name} missing inside the bank"):
        Bank(path)


def test_a_full_disk_mid_write_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    """HDF5 reports a failed write late and then crashes on close; the writer's sink must end it cleanly."""
    import errno

    from glag.data import h5writer

    class Full:
        def __init__(self, file):
            self.file = file

        def write(self, buf):
            if self.file.tell() + len(buf) > 20000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.file.write(buf)

        def __getattr__(self, name):
            return getattr(self.file, name)

    real = h5writer._Sink.__init__

    def small_disk(self, path):
        real(self, path)
        self.file = Full(self.file)
    monkeypatch.setattr(h5writer._Sink, "__init__", small_disk)
    with pytest.raises(GlagError, match="b.h5: not written, the disk is full") as info:
        write_tiny_bank(tmp_path / "b.h5")
    assert "\n" not in str(info.value) and list(tmp_path.iterdir()) == []


def test_validation_runs_once_per_bank_and_without_a_writable_folder(tmp_path, monkeypatch):
    from glag.data import validate
    path = write_tiny_bank(tmp_path / "b.h5")
    scans = []
    real = validate._scan_split
    monkeypatch.setattr(validate, "_scan_split", lambda *a: scans.append(a[1]) or real(*a))
    with Bank(path) as bank:
        validate.validate_bank(bank, logits=("train",))
        assert sorted(scans) == ["test", "train", "val"] and validate.cache_path(bank).is_file()
        validate.validate_bank(bank, logits=("train",))           # cached: no second pass
        assert len(scans) == 3
        validate.cache_path(bank).unlink()
        import tempfile
        monkeypatch.setattr(tempfile, "mkstemp", lambda **kw: (_ for _ in ()).throw(PermissionError(13, "denied")))
        validate.validate_bank(bank)                                # a read-only bank folder: no cache, no error
        assert not validate.cache_path(bank).exists() and len(scans) == 6


def test_verify_finds_rows_altered_after_writing(tmp_path):
    from glag.data.verify import verify
    path = write_tiny_bank(tmp_path / "b.h5")
    assert verify(path) == ""
    with h5py.File(path, "r+") as f:
        f["train/features"][3] = f["train/features"][3] + 1       # new checksums, old fingerprint attr
    with Bank(path) as bank:
        bank.load("train")                                         # readers do not notice ...
    with pytest.raises(GlagError, match="does not match its fingerprint"):
        verify(path)                                               # ... glag-verify does
