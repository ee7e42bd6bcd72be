"""Bad inputs through every CLI (issue #11): each ends with exit code 1, exactly one `Error:` line that
names the file or option at fault, no traceback, and no new file in the folders it writes to (temp files
included; the only file allowed is the validation cache beside a bank whose checks passed).

Most cases run the click mains in this process; disk full (RLIMIT_FSIZE) and two concurrent runs need
real processes. Root ignores chmod, so "permission denied" is simulated where h5py opens the file.
"""
import json
import resource
import subprocess
import sys
from pathlib import Path

import click
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from glag.classify.cli import main as classify
from glag.data.bank import BankWriter
from glag.cli.util import friendly_errors
from glag.data.errors import GlagError
from glag.extract.cli import main as extract
from glag.generate.cli import main as generate
from glag.generate.toybank import exp_counts, write_toy_bank
from glag.reproduce.cli import main as reproduce_main
from glag.verify import main as verify
from tests.conftest import write_tiny_bank

REPRODUCE = (reproduce_main, [])

COUNTS = exp_counts(12, 150, 40)
CACHE = ".bank.h5.checks.json"      # glag.data.validate's cache: written only when a bank's checks pass
CRT = ["--method", "crt", "--epochs", "1", "--no-plots", "--no-deploy"]


def tree(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


def one_error(output: str, *needles) -> str:
    """The single `Error:` line of `output`; no traceback; every needle in it."""
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output and "Caught GlagError" not in output, output
    for needle in needles:
        assert str(needle) in errors[0], output
    return errors[0]


def refused(main, args, root: Path, *needles) -> str:
    """Invoke `main` in this process; assert the bad-input contract; return the error line."""
    before = tree(root)
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    line = one_error(res.output, *needles)
    new = {p for p in tree(root) - before if p.name != CACHE}
    assert not new, f"new files {sorted(map(str, new))} after: {line}"
    return line


# ---------------------------------------------------------------- ways to damage a bank or a store
def set_value(name, index, value):
    def damage(path, mp):
        with h5py.File(path, "r+") as f:
            f[name][index] = value
    return damage


def delete(name):
    def damage(path, mp):
        with h5py.File(path, "r+") as f:
            del f[name]
    return damage


def flip_bytes(name):
    """Flip bytes of the first row in the first chunk of `name` (Fletcher-32 must catch it; the unused
    tail of a chunk is zeros, and 0x0000 -> 0xFFFF is the one change a ones'-complement sum misses)."""
    def damage(path, mp):
        with h5py.File(path, "r") as f:
            info = f[name].id.get_chunk_info(0)
        data = bytearray(path.read_bytes())
        at = info.byte_offset + 2
        data[at:at + 4] = bytes(b ^ 0x5A for b in data[at:at + 4])
        path.write_bytes(bytes(data))
    return damage


def truncate(path, mp):
    path.write_bytes(path.read_bytes()[:5000])


def set_attr(name, value):
    def damage(path, mp):
        with h5py.File(path, "r+") as f:
            f.attrs[name] = value
    return damage


def deny(path, mp):
    """What h5py raises for a file the user may not read (chmod does not stop root, who runs the tests)."""
    real = h5py.File

    def fake(name, *args, **kwargs):
        if isinstance(name, (str, Path)) and Path(name).resolve() == Path(path).resolve():
            raise PermissionError(13, f"Unable to synchronously open file (unable to open file: name = '{name}', "
                                      "errno = 13, error message = 'Permission denied')")
        return real(name, *args, **kwargs)
    mp.setattr(h5py, "File", fake)


def nothing(path, mp):
    pass


# ---------------------------------------------------------------- inputs
def tiny(root):
    return write_tiny_bank(root / "runs" / "tiny" / "bank.h5")


def toy(root):
    """A bank without a val split, shaped for glag-generate."""
    return write_toy_bank(root / "runs" / "toy" / "bank.h5", COUNTS, 8, seed=1)


def viewed(root):
    """A tiny bank with 2 float32 augmented views of its train split."""
    path = root / "runs" / "views" / "bank.h5"
    rng = np.random.default_rng(0)
    C, D, n = 3, 4, 6
    with BankWriter(path, dataset="v", backbone="b", loss="ce", class_names=list("abc"), train_counts=[2] * C,
                    feature_dim=D, config={}, views=2, views_dtype="float32") as w:
        for split in ("train", "val", "test"):
            f, y = rng.uniform(0.1, 2, (n, D)), np.arange(n) % C
            w.add_rows(split, f, y, rng.standard_normal((n, C)), np.arange(n))
        for v in range(2):
            f = rng.uniform(0.1, 2, (n, D))
            w.add_view_rows(v, f, rng.standard_normal((n, C)))
        w.set_head(rng.standard_normal((C, D)), np.zeros(C))
    return path


def store_for(bank, *args):
    res = CliRunner().invoke(generate, ["--bank", str(bank), *map(str, args)])
    assert res.exit_code == 0, res.output
    return Path(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- glag-generate
GEN = []
GENERATE_CASES = [
    ("nan", set_value("train/features", (5, 3), np.nan), [], ["NaN or Inf in train/features (row 5)"]),
    ("inf", set_value("train/features", (7, 0), np.inf), ["--tukey", "1"], ["NaN or Inf"]),
    ("negative", set_value("train/features", (5, 3), -2.0), [], ["negative values", "features are >= 0"]),
    ("label-too-big", set_value("train/labels", 4, 99), [], ["label 99", "0..11"]),
    ("label-negative", set_value("train/labels", 4, -1), [], ["label -1", "outside the classes"]),
    ("counts", set_value("classes/train_counts", 0, 151), [], ["class 0", "classes/train_counts says 151"]),
    ("missing-dataset", delete("train/logits"), [], ["dataset train/logits missing"]),
    ("permission", deny, [], ["permission denied"]),
    ("corrupted", flip_bytes("train/features"), [], ["train/features is corrupted"]),
    ("truncated", truncate, [], ["truncated"]),
    ("schema", set_attr("schema", "glag-bank/0"), [], ["schema 'glag-bank/0'"]),
    ("no-views", nothing, ["--moments-from", "views"], ["--moments-from views", "no augmented views"]),
]


@pytest.mark.parametrize("damage, args, needles", [c[1:] for c in GENERATE_CASES], ids=[c[0] for c in GENERATE_CASES])
def test_generate_refuses(damage, args, needles, tmp_path, monkeypatch):
    bank = toy(tmp_path)
    damage(bank, monkeypatch)
    refused(generate, ["--bank", bank, *GEN, *args], tmp_path, *needles, bank)


def test_generate_names_a_missing_bank(tmp_path):
    refused(generate, ["--bank", tmp_path / "none" / "bank.h5"], tmp_path, "no feature bank", "make features")


def test_generate_warns_once_when_stage_two_will_lack_a_val_split(tmp_path):
    res = CliRunner().invoke(generate, ["--bank", str(toy(tmp_path))])
    assert res.exit_code == 0
    warnings = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no val split" in warnings[0] and "--no-ad" in warnings[0]


# ---------------------------------------------------------------- glag-classify run
def run_args(bank, *extra):
    return ["run", "--bank", bank, *CRT, *extra]


RUN_CASES = [
    ("nan-train", tiny, set_value("train/features", (3, 1), np.nan), [], ["NaN or Inf in train/features (row 3)"]),
    ("inf-val", tiny, set_value("val/features", (2, 0), -np.inf), [], ["NaN or Inf in val/features (row 2)"]),
    ("nan-test", tiny, set_value("test/features", (9, 5), np.nan), [], ["test/features"]),
    ("nan-head", tiny, set_value("stage1/classifier/weight", (1, 1), np.inf), [], ["stage1/classifier/weight"]),
    ("label-too-big", tiny, set_value("train/labels", 0, 6), [], ["label 6 in train/labels (row 0)", "0..5"]),
    ("val-label", tiny, set_value("val/labels", 3, 17), [], ["label 17 in val/labels"]),
    ("counts", tiny, set_value("classes/train_counts", 5, 3), [], ["class 5 has 2 train rows", "says 3"]),
    ("negative-tukey", tiny, set_value("train/features", (1, 1), -1.0),
     ["--space", "tukey", "--no-synthetic"], ["negative values in train/features", "features are >= 0"]),
    ("negative-raw", tiny, set_value("test/features", (4, 2), -0.5), [],           # the contract, in any space
     ["negative values in test/features (min -0.5)", "features are >= 0", "make features"]),
    ("missing-dataset", tiny, delete("test/labels"), [], ["dataset test/labels missing inside the bank"]),
    ("wrong-shape", tiny, lambda p, mp: _reshape(p, "val/logits"), [],
     ["val/logits has shape (3, 6), expected (60, 6)"]),
    ("permission", tiny, deny, [], ["permission denied", "read access"]),
    ("corrupted", tiny, flip_bytes("train/features"), [], ["train/features is corrupted"]),
    ("views-nan", viewed, set_value("train_views/features", (1, 2, 0), np.nan), ["--views", "2"],
     ["train_views/features of view 1 (row 2)"]),
    ("ad-without-val", toy, nothing, ["--method", "glag", "--ad", "--no-kd"], ["--ad", "no val split", "--no-ad"]),
    ("tau-sweep-without-val", toy, nothing, ["--method", "tau_norm"], ["--tau-norm-taus", "val split"]),
    ("posthoc-sweep-without-val", toy, nothing, ["--method", "posthoc_la"], ["--posthoc-la-taus", "val split"]),
]


def _reshape(path, name):
    with h5py.File(path, "r+") as f:
        del f[name]
        f[name] = np.zeros((3, 6), np.float32)


@pytest.mark.parametrize("make, damage, args, needles", [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])
def test_classify_run_refuses(make, damage, args, needles, tmp_path, monkeypatch):
    bank = make(tmp_path)
    if "--method" in args and "glag" in args:
        store_for(bank)                      # AD needs a store before it can need a val split
    damage(bank, monkeypatch)
    refused(classify, run_args(bank, *args), tmp_path, *needles)


def test_classify_run_refuses_a_store_of_another_bank(tmp_path):
    bank, other = tiny(tmp_path), write_tiny_bank(tmp_path / "runs" / "other" / "bank.h5", seed=3)
    store = store_for(other)
    refused(classify, run_args(bank, "--method", "glag", "--no-ad", "--store", store), tmp_path,
            "made from another bank", str(store))


@pytest.mark.parametrize("damage, needle", [(flip_bytes("factors/rows"), "factors/rows is corrupted"),
                                            (delete("factors/qr"), "dataset factors/qr missing inside the store")],
                         ids=["store-corrupted", "store-missing-dataset"])
def test_classify_run_refuses_a_damaged_store(damage, needle, tmp_path, monkeypatch):
    bank = tiny(tmp_path)
    store = store_for(bank)
    damage(store, monkeypatch)
    refused(classify, run_args(bank, "--method", "glag", "--no-ad"), tmp_path, needle, str(store))


def test_validation_is_cached_by_fingerprint_size_and_mtime(tmp_path):
    bank = tiny(tmp_path)
    res = CliRunner().invoke(classify, run_args(bank, "--run", "first"))
    assert res.exit_code == 0, res.output
    cache = json.loads((bank.parent / CACHE).read_text())
    assert cache["key"]["size"] == bank.stat().st_size and "train/features" in cache["checked"]
    set_value("val/features", (0, 0), np.nan)(bank, None)            # edited in place: same fingerprint attr
    refused(classify, run_args(bank, "--run", "second"), tmp_path, "NaN or Inf in val/features")


# ---------------------------------------------------------------- glag-classify sweep, table, reproduce
def test_sweep_refuses_a_grid_that_is_not_json(tmp_path):
    grid = tmp_path / "g.json"
    grid.write_text("{not json")
    refused(classify, ["sweep", "--grid", grid, "--bank", tiny(tmp_path)], tmp_path, "--grid", "not valid JSON")


def test_sweep_refuses_an_unknown_key(tmp_path):
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"grid": {"method": ["crt"], "epoch": [1]}}))
    refused(classify, ["sweep", "--grid", grid, "--bank", tiny(tmp_path)], tmp_path, "unknown key(s) ['epoch']")


def test_sweep_on_a_bank_with_nan_features_writes_nothing(tmp_path):
    bank = tiny(tmp_path)
    set_value("train/features", (0, 0), np.nan)(bank, None)
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"base": {"epochs": 1}, "grid": {"method": ["crt"]}}))
    refused(classify, ["sweep", "--grid", grid, "--bank", bank, "--jobs", 1], tmp_path, "NaN or Inf in train/features")


def test_table_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notarun").mkdir()
    refused(classify, ["table", tmp_path / "notarun"], tmp_path, "no metrics.json")


@pytest.mark.parametrize("damage, needle", [(delete("stage1/classifier/bias"), "stage1/classifier/bias missing"),
                                            (deny, "permission denied")], ids=["missing-dataset", "permission"])
def test_table_refuses_a_damaged_stage_one_bank(damage, needle, tmp_path, monkeypatch):
    bank = tiny(tmp_path)
    res = CliRunner().invoke(classify, run_args(bank, "--run", "r"))
    assert res.exit_code == 0, res.output
    damage(bank, monkeypatch)
    refused(classify, ["table", bank.parent / "stage2" / "r", "--stage-one", bank], tmp_path, needle, bank)


REPRODUCE_CASES = [
    (["--seeds", "x"], "--seeds 'x'"),
    (["--im", "steep"], "--im 'steep'"),
    (["--jobs", "0"], "--jobs 0"),
    (["--losses", "nope"], "nope"),
    (["--extract-args", "epochs 8"], "expected --option"),
]


@pytest.mark.parametrize("args, needle", REPRODUCE_CASES, ids=[a[0] for a, _ in REPRODUCE_CASES])
def test_reproduce_refuses(args, needle, tmp_path):
    main, sub = REPRODUCE
    refused(main, [*sub, "--recipe", "digits", "--runs-root", tmp_path / "runs", "--dry-run", *args], tmp_path, needle)


# ---------------------------------------------------------------- glag-extract
def image_folder(root, broken: bytes):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, per_class in (("train", [12, 8, 6]), ("test", [3, 3, 3])):
        for k, n in enumerate(per_class):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(60 * k + rng.normal(40, 10, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    bad = root / "train" / "class1" / "3.png"
    bad.write_bytes(broken if broken else bad.read_bytes()[:40])
    return bad


@pytest.mark.parametrize("workers, broken", [(0, b"not an image"), (2, b"not an image"), (2, b"")],
                         ids=["junk-workers0", "junk-workers2", "truncated-workers2"])
def test_extract_names_an_undecodable_image_whatever_the_workers(workers, broken, tmp_path):
    bad = image_folder(tmp_path / "imgs", broken)
    refused(extract, ["--dataset", "folder", "--data-root", tmp_path / "imgs", "--image-size", 8, "--backbone",
                      "resnet_small", "--epochs", 1, "--batch-size", 8, "--im", 3, "--val-per-class", 1,
                      "--workers", workers, "--threads", 1, "--preload-mb", 0, "--no-current",
                      "--out", tmp_path / "out" / "bank.h5"], tmp_path, bad, "replace or remove")


# ---------------------------------------------------------------- glag-verify
def test_verify_passes_a_sound_bank_and_store(tmp_path):
    bank = tiny(tmp_path)
    for path in (bank, store_for(bank)):
        res = CliRunner().invoke(verify, [str(path)])
        assert res.exit_code == 0 and res.stdout == "ok\n", res.output


@pytest.mark.parametrize("damage, needle", [
    (set_value("train/features", (0, 0), 7.0), "does not match its fingerprint"),    # rows altered in place
    (flip_bytes("test/logits"), "test/logits is corrupted"),
    (delete("train/index"), "dataset train/index missing"),
], ids=["altered", "corrupted", "missing-dataset"])
def test_verify_refuses_a_damaged_bank(damage, needle, tmp_path, monkeypatch):
    bank = tiny(tmp_path)
    damage(bank, monkeypatch)
    refused(verify, [bank], tmp_path, needle, bank)


def test_verify_refuses_an_altered_store(tmp_path):
    store = store_for(tiny(tmp_path))
    set_value("factors/rows", (0, 0), 1e3)(store, None)
    refused(verify, [store], tmp_path, "does not match its fingerprint", "glag-generate --force")


# ---------------------------------------------------------------- real processes: disk full, two runs at once
def tool(module: str, *args, limit=None, **kw):
    """Start `module`'s click main in a fresh Python; `limit` sets RLIMIT_FSIZE (bytes) in the child."""
    cmd = [sys.executable, "-c", f"from {module} import main; main()", *map(str, args)]
    pre = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))) if limit else None
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=pre, **kw)


def finished(proc, timeout=120) -> tuple:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


@pytest.mark.slow
def test_disk_full_generate_and_classify_end_in_one_line(tmp_path):
    """Under `ulimit -f` glag-generate once died with SIGSEGV after pages of h5py errors, leaving its temp file,
    and glag-classify run with an OSError traceback; both write nothing now and say how much was needed."""
    gen_bank, run_bank = toy(tmp_path / "g"), tiny(tmp_path / "c")
    before = tree(tmp_path)
    gen = tool("glag.generate.cli", "--bank", gen_bank, "--sample-per-class", 100, limit=20000)
    run = tool("glag.classify.cli", *run_args(run_bank, "--run", "r"), limit=600)
    (gen_code, gen_out), (run_code, run_out) = finished(gen), finished(run)
    assert gen_code == 1, gen_out
    one_error(gen_out, "synthetic/", "the file-size limit (ulimit -f) was reached", "it needs about")
    assert run_code == 1, run_out
    one_error(run_out, "stage2/r/config.json", "file-size limit", "bytes")
    assert {p for p in tree(tmp_path) - before if p.name != CACHE} == set()


@pytest.mark.slow
def test_two_runs_of_one_name_at_once_one_wins(tmp_path):
    bank = tiny(tmp_path)
    procs = [tool("glag.classify.cli", *run_args(bank, "--run", "same", "--epochs", 3)) for _ in range(2)]
    results = sorted(finished(p) for p in procs)
    assert [code for code, _ in results] == [0, 1], results
    one_error(results[1][1], "stage2/same")
    assert any(s in results[1][1] for s in ("another process wrote this run folder", "run folder exists"))
    stage2 = bank.parent / "stage2"
    assert [p.name for p in stage2.iterdir()] == ["same"]                 # no temp folder of the loser
    assert {"config.json", "metrics.json", "head.pt"} <= {p.name for p in (stage2 / "same").iterdir()}


# ---------------------------------------------------------------- what every console script does with errors
def _failing(exc):
    @click.command()
    @friendly_errors
    def main():
        raise exc
    return main


@pytest.mark.parametrize("exc, needle", [
    (GlagError(
        "Caught GlagError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n  File \"x.py\", "
        "line 1, in f\nglag.data.errors.GlagError: /d/a.png: not a readable image; replace or remove the file"),
     "Error: /d/a.png: not a readable image; replace or remove the file"),
    (OSError(28, "No space left on device"), "Error: No space left on device; free space"),
    (FileNotFoundError(2, "No such file or directory", "/x/grid.json"), "Error: /x/grid.json: No such file"),
    (PermissionError(13, "Permission denied", "/x/out"), "Error: /x/out: Permission denied; check its permissions"),
], ids=["worker-glag-error", "disk-full", "missing-file", "permission"])
def test_console_scripts_turn_environment_errors_into_one_line(exc, needle):
    res = CliRunner().invoke(_failing(exc), [])
    assert res.exit_code == 1 and one_error(res.output).startswith(needle), res.output


def test_other_os_errors_keep_their_traceback():
    res = CliRunner().invoke(_failing(OSError(5, "Input/output error")), [])
    assert isinstance(res.exception, OSError) and not isinstance(res.exception, SystemExit)
