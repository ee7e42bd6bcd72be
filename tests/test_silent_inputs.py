"""Bad inputs that used to pass silently (issue #18: exit 0 with a wrong result, or a leftover): each is now
refused in one line, with exit code 1 and nothing written (the contract of tests/test_bad_inputs.py)."""
import json
import os

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from glag.classify.cli import main as classify
from glag.data.bank import BankWriter
from glag.extract.cli import main as extract
from glag.generate.cli import main as generate
from glag.verify import main as verify
from tests.conftest import write_tiny_bank
from tests.test_bad_inputs import CACHE, CRT, refused, run_args, store_for, tiny, toy


# ---------------------------------------------------------------- damage the chunk checksums cannot see
def relu_bank(root):
    """A small bank whose train/features hold exact zeros (as post-ReLU features do), row 3 column 1 among them."""
    path = root / "runs" / "relu" / "bank.h5"
    rng = np.random.default_rng(0)
    C, D = 3, 4
    with BankWriter(path, dataset="relu", backbone="none", loss="ce", class_names=list("abc"), train_counts=[8, 6, 4],
                    feature_dim=D, config={}) as w:
        W = rng.standard_normal((C, D)).astype(np.float32)
        for split, per_class in (("train", [8, 6, 4]), ("val", [4] * C), ("test", [4] * C)):
            y = np.repeat(np.arange(C), per_class)
            f = np.maximum(rng.normal(1.0, 1.0, (len(y), D)) + y[:, None], 0).astype(np.float32)
            f[3, 1] = 0.0
            w.add_rows(split, f, y, f @ W.T, np.arange(len(y)))
        w.set_head(W, np.zeros(C))
        w.set_metrics({"test": {"overall": 0.5}})
    return path


def erase_zero(path, name="train/features", row=3, col=1):
    """Erased flash: the 4 bytes of the 0.0 at (row, col) become 0xFF, a NaN. Fletcher-32 sums 16-bit words
    mod 65535, where 0x0000 and 0xFFFF are equal, so the chunk still passes its checksum; the file keeps its
    modification time, as bit rot does."""
    with h5py.File(path, "r") as f:
        ds = f[name]
        assert ds[row, col] == 0.0 and ds.chunks[0] > row
        at = ds.id.get_chunk_info(0).byte_offset + (row * ds.shape[1] + col) * 4
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(at)
        fh.write(b"\xff" * 4)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with h5py.File(path, "r") as f:
        assert np.isnan(f[name][row, col])          # the checksum let it through


def test_an_erased_zero_is_refused_by_a_run_whose_bank_was_validated_before(tmp_path):
    bank = relu_bank(tmp_path)
    res = CliRunner().invoke(classify, run_args(bank, "--run", "before"))
    assert res.exit_code == 0 and (bank.parent / CACHE).is_file(), res.output
    erase_zero(bank)
    refused(classify, run_args(bank, "--run", "after"), tmp_path, "NaN or Inf in train/features (row 3)",
            "glag-verify", bank)


def test_an_erased_zero_is_refused_by_generate_and_named_by_verify(tmp_path):
    bank = relu_bank(tmp_path)
    erase_zero(bank)
    refused(generate, ["--bank", bank, "--k", 1, "--tukey", 1], tmp_path, "NaN or Inf in train/features (row 3)")
    refused(verify, [bank], tmp_path, "train/features does not match its fingerprint", "restore a good copy")


def first_zero(path):
    """(dataset, row, col) of an exact 0.0 in the first chunk of a 2-d float dataset of the file."""
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype == np.float32 and obj.ndim == 2 and obj.chunks \
                and obj.chunks[1] == obj.shape[1] and not found:
            zeros = np.argwhere(obj[:obj.chunks[0]] == 0)
            if len(zeros):
                found.append((name, *map(int, zeros[0])))
    with h5py.File(path, "r") as f:
        f.visititems(visit)
    assert found, "no exact zero in the file"
    return found[0]


def test_an_erased_zero_in_a_store_is_named_by_verify(tmp_path):
    store = tmp_path / "store.h5"
    # every class of the tiny bank is a tail class, so the largest has no larger support: weight 0 pads it
    res = CliRunner().invoke(generate, ["--bank", str(tiny(tmp_path)), "--out", str(store)])
    assert res.exit_code == 0, res.output
    name, row, col = first_zero(store)
    erase_zero(store, name, row, col)
    refused(verify, [store], tmp_path, f"{name} does not match its fingerprint", "glag-generate --force")


# ---------------------------------------------------------------- metadata
def edit_bytes(path, old: bytes, new: bytes):
    """Change bytes of the file in place (an attribute's JSON text), keeping its length and modification time."""
    assert len(old) == len(new)
    data, st = path.read_bytes(), path.stat()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


METRICS = b'{"test": {"overall": 0.5}}'


@pytest.mark.parametrize("new", [b'{"test": {"overall": 0.7}}', b'{"test": {"overall": 0.5}!'], ids=["altered", "broken"])
def test_damaged_metrics_fail_verify_and_the_run_before_training(new, tmp_path):
    bank = tiny(tmp_path)
    edit_bytes(bank, METRICS, new)
    refused(verify, [bank], tmp_path, "attributes (config, metrics, provenance) do not match their digest")
    refused(classify, run_args(bank), tmp_path, "do not match their digest", "make features")


def test_broken_json_in_a_bank_from_before_attribute_digests_is_refused_before_training(tmp_path):
    bank = tiny(tmp_path)
    with h5py.File(bank, "r+") as f:
        del f.attrs["attrs_digest"], f.attrs["digests"]
    edit_bytes(bank, METRICS, b'{"test": {"overall": 0.5}!')
    refused(classify, run_args(bank), tmp_path, "attribute stage1/metrics is not valid JSON")
    res = CliRunner().invoke(verify, [str(bank)])
    assert res.exit_code == 1 and "stage1/metrics is not valid JSON" in res.output


def test_every_dataset_and_the_attributes_have_a_digest(tmp_path):
    bank = tiny(tmp_path)
    with h5py.File(bank, "r") as f:
        digests = json.loads(f.attrs["digests"])
        datasets = []
        f.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert len(f.attrs["attrs_digest"]) == 64
    covered = set(digests) - {"classes", "head"} | {"classes/names", "classes/train_counts",
                                                    "stage1/classifier/weight", "stage1/classifier/bias"}
    assert covered == set(datasets) and all(len(h) == 64 for h in digests.values())


# ---------------------------------------------------------------- verify on files that are no bank
def test_verify_on_a_file_that_is_not_hdf5_never_says_to_delete_it(tmp_path):
    ckpt = tmp_path / "bank.ckpt.pt"
    ckpt.write_bytes(b"PK\x03\x04" + bytes(200))               # a torch checkpoint is a zip file
    line = refused(verify, [ckpt], tmp_path, "not an HDF5 file", "glag-verify checks feature banks")
    assert "delete" not in line


def test_verify_on_a_truncated_bank_says_to_restore_or_rebuild(tmp_path):
    bank = write_tiny_bank(tmp_path / "b.h5")
    bank.write_bytes(bank.read_bytes()[:5000])
    line = refused(verify, [bank], tmp_path, "damaged or truncated HDF5 file", "restore a good copy")
    assert "delete" not in line


# ---------------------------------------------------------------- --config from another tool, or with unknown keys
def crt_run(root, *extra):
    bank = tiny(root)
    res = CliRunner().invoke(classify, run_args(bank, "--run", "r", *extra))
    assert res.exit_code == 0, res.output
    return bank, bank.parent / "stage2" / "r"


def test_a_banks_config_cannot_configure_a_stage_two_run(tmp_path):
    bank = tiny(tmp_path)
    refused(classify, ["run", "--config", bank, "--bank", bank, *CRT], tmp_path,
            f"--config {bank}: a feature bank (stage one's options) cannot configure glag-classify run")


def test_a_runs_config_cannot_configure_stage_one(tmp_path):
    _, run = crt_run(tmp_path)
    refused(extract, ["--config", run / "config.json", "--out", tmp_path / "b" / "bank.h5"], tmp_path,
            "a stage-two run's config.json", "cannot configure glag-extract")


def test_a_misspelt_key_is_refused_with_its_close_match(tmp_path):
    bank, hand = tiny(tmp_path), tmp_path / "mine.json"
    hand.write_text(json.dumps({"epocs": 2, "method": "crt"}))
    refused(classify, ["run", "--config", hand, "--bank", bank], tmp_path,
            "unknown key(s) 'epocs' (did you mean 'epochs'?)", "glag-classify run takes only its own options")


def test_an_edited_key_in_a_runs_own_config_is_refused(tmp_path):
    bank, run = crt_run(tmp_path)
    saved = json.loads((run / "config.json").read_text())
    saved["cfg"]["epocs"] = saved["cfg"].pop("epochs")
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(saved))
    refused(classify, ["run", "--config", edited, "--run", "again"], tmp_path, "unknown key(s) 'epocs'")


def test_the_options_taken_from_a_config_are_named(tmp_path):
    bank, hand = tiny(tmp_path), tmp_path / "mine.json"
    hand.write_text(json.dumps({"epochs": 2, "method": "crt", "out": "elsewhere"}))
    res = CliRunner().invoke(classify, ["run", "--config", str(hand), "--bank", str(bank), "--run", "r",
                                        "--no-plots", "--no-deploy"])
    assert res.exit_code == 0, res.output
    assert f"--config {hand}: took 2 option(s) of glag-classify run: epochs, method; not out" in res.output
    cfg = json.loads((bank.parent / "stage2" / "r" / "config.json").read_text())["cfg"]
    assert cfg["epochs"] == 2 and cfg["method"] == "crt"


# ---------------------------------------------------------------- options that would do nothing
@pytest.mark.parametrize("args, needles", [
    (["--method", "glag", "--head", "ncm"], ["--head ncm is fitted without training: --synthetic, --ad, --kd",
                                             "use --method ncm"]),
    (["--method", "glag", "--head", "posthoc_la", "--no-ad"], ["--head posthoc_la", "--synthetic, --kd"]),
    (["--method", "tau_norm", "--kd"], ["--head tau_norm is fitted without training: --kd", "--no-kd"]),
], ids=["glag-ncm", "glag-posthoc", "tau-norm-kd"])
def test_a_head_fitted_without_training_refuses_what_it_cannot_use(args, needles, tmp_path):
    bank = tiny(tmp_path)
    store_for(bank)
    refused(classify, ["run", "--bank", bank, "--no-plots", "--no-deploy", *args], tmp_path, *needles)


def test_compile_mode_without_compile_is_refused(tmp_path):
    refused(extract, ["--dataset", "digits", "--epochs", 1, "--compile-mode", "max-autotune", "--out",
                      tmp_path / "b" / "bank.h5"], tmp_path, "--compile-mode max-autotune applies only with --compile")


# ---------------------------------------------------------------- a bank without a val split
def test_a_run_that_needs_no_val_says_nothing_was_tuned_on_val(tmp_path):
    res = CliRunner().invoke(classify, run_args(toy(tmp_path), "--run", "r"))
    assert res.exit_code == 0, res.output
    notes = [line for line in res.output.splitlines() if "no val split" in line]
    assert len(notes) == 1 and notes[0].startswith("note:") and "nothing in this run is tuned on val" in notes[0]


# ---------------------------------------------------------------- --views bounded by memory, --tensorboard checked first
STAGE_ONE = ["--dataset", "digits", "--epochs", 1, "--threads", 1, "--workers", 0]


def test_views_that_stage_two_could_not_hold_are_refused_before_training(tmp_path, monkeypatch):
    from glag.extract import dump
    monkeypatch.setattr(dump, "available_memory", lambda: 10 * 2 ** 20)       # 10 MiB free
    refused(extract, [*STAGE_ONE, "--views", 100000, "--out", tmp_path / "b" / "bank.h5"], tmp_path,
            "--views 100000: stage two holds the views in memory as float32", "views fit: lower --views")


def readonly(folder, monkeypatch):
    """What a read-only folder looks like to os.access (root, who runs the tests, ignores chmod)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(folder) else real(p, mode, **kw))


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_tensorboard_folders_that_cannot_be_written_are_refused_before_any_work(where, tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    if where == "under-a-file":
        blocker.write_text("")
        needles = [f"{blocker} is a file, not a folder"]
    else:
        blocker.mkdir()
        readonly(blocker, monkeypatch)
        needles = [f"permission denied writing in {blocker}"]
    board = blocker / "tb"
    bank = tiny(tmp_path)
    refused(classify, run_args(bank, "--tensorboard", board), tmp_path, "--tensorboard", *needles)
    refused(generate, ["--bank", bank, "--tensorboard", board], tmp_path, *needles)
    refused(extract, [*STAGE_ONE, "--out", tmp_path / "b" / "bank.h5", "--tensorboard", board], tmp_path, *needles)


def test_a_sweep_or_api_run_checks_its_tensorboard_folder_before_training(tmp_path):
    from glag.classify.run import run_stage2
    from glag.data.errors import GlagError
    from glag.classify.config import defaults
    from glag.classify.options import loss_option_specs
    (tmp_path / "file").write_text("")
    options = defaults({k: v for k, (v, _) in loss_option_specs().items()})
    options.update(bank=str(tiny(tmp_path)), method="crt", epochs=1, plots=False, deploy=False,
                   tensorboard=str(tmp_path / "file" / "tb"))
    with pytest.raises(GlagError, match="is a file, not a folder"):
        run_stage2(options, {"method", "epochs", "tensorboard"})
    assert not (tmp_path / "runs" / "tiny" / "stage2").exists()


# ---------------------------------------------------------------- messages that gave risky or wrong advice
def test_pretrained_that_is_not_a_state_dict_never_advises_weights_only_false(tmp_path):
    import fractions
    import torch
    ckpt = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2), "note": fractions.Fraction(1, 3)}, ckpt)    # a pickled Python object
    line = refused(extract, [*STAGE_ONE, "--pretrained", ckpt, "--out", tmp_path / "b" / "bank.h5"], tmp_path,
                   "not a loadable torch checkpoint", "never unpickled here")
    assert "weights_only" not in line and "False" not in line


def test_dump_only_on_an_unreadable_checkpoint_does_not_advise_no_resume(tmp_path):
    out = tmp_path / "b" / "bank.h5"
    out.parent.mkdir()
    (out.parent / "bank.ckpt.pt").write_bytes(b"junk")
    line = refused(extract, [*STAGE_ONE, "--dump-only", "--out", out], tmp_path, "not a readable stage-one checkpoint",
                   "--dump-only has nothing to dump", "restore the checkpoint from a copy")
    assert "--no-resume" not in line and "delete" not in line
