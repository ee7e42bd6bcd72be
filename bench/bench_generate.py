"""Benchmark: glag-generate's AFG against a dense reference in the style of the peers.

    python bench/bench_generate.py [--scale 1000x512|200x2048|inat2018|all] [--quick]

The reference does what free-lunch distribution calibration and TailCalibX do,
in torch and as vectorised as that design allows: every class covariance
materialised (C x D x D, float32), then per tail sample one calibrated
covariance (Eq. 9), its Cholesky factor (batched), and the rows drawn from it.
Both sides load the bank with the same streaming pass (glag.generate.stats), use
the same support search, and draw the rows the gap rule gives each tail sample
(round-robin, one generation epoch) on the same tail classes.

Each side runs in its own subprocess, so peak memory (getrusage maxrss) is its
own; "above baseline" subtracts the RSS after imports (torch alone is ~0.5 GB).
Banks are random (glag.generate.toybank) and cached as raw float32 files under
--cache, so both sides read identical rows from disk. Figures go to
bench/results/generate.json and generate.md. Timings on a shared machine are
noisy: compare sides of one run, not runs of different days.
"""
import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from glag.generate.afg import AdaptiveFeatureGenerator                           # noqa: E402
from glag.generate.neighbors import support_classes                              # noqa: E402
from glag.generate.parallel import parallel_classes, release_memory              # noqa: E402
from glag.generate.stats import class_moments                                    # noqa: E402
from glag.generate.toybank import SHAPES, ToyBank, exp_counts                    # noqa: E402

BETA, GAMMA, K, LAM = 0.6, 0.0, 3, 0.5


# name: counts, D, the reference's bank (None: the same), tail-class stride for sampling (both sides)
SCALES = {
    "1000x512": dict(counts=lambda: exp_counts(1000, 1280, 256), dim=512, stride=2, ref_stride=4),
    "200x2048": dict(counts=lambda: exp_counts(200, 1280, 256), dim=2048, stride=1, ref_stride=8),
    "inat2018": dict(counts=SHAPES["inat2018"][0], dim=2048, stride=50, ref_subset=40, ref_stride=8),
    "quick": dict(counts=lambda: exp_counts(100, 400, 100), dim=64, stride=1, ref_stride=1),
}


class FileBank:
    """A cached random bank: features.f32 (N, D) raw, labels.npy, counts.npy; read in chunks like Bank."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.train_counts = np.load(self.folder / "counts.npy")
        self.labels = np.load(self.folder / "labels.npy")
        self.feature_dim = json.loads((self.folder / "meta.json").read_text())["dim"]
        self.path = str(self.folder)

    def rows(self, split="train"):
        return len(self.labels)

    def iter_chunks(self, split="train", fields=None, chunk_rows=4096):
        with open(self.folder / "features.f32", "rb") as f:
            for start in range(0, len(self.labels), chunk_rows):
                m = min(chunk_rows, len(self.labels) - start)
                x = np.fromfile(f, dtype=np.float32, count=m * self.feature_dim).reshape(m, self.feature_dim)
                yield start, {"features": x, "labels": self.labels[start:start + m]}


def make_cache(folder: Path, counts, dim: int, seed: int = 0):
    if (folder / "meta.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    toy = ToyBank(counts, dim, seed)
    with open(folder / "features.f32", "wb") as f:
        for _, chunk in toy.iter_chunks():
            chunk["features"].tofile(f)
    np.save(folder / "labels.npy", toy.labels)
    np.save(folder / "counts.npy", toy.train_counts)
    (folder / "meta.json").write_text(json.dumps({"dim": dim, "rows": int(len(toy.labels)), "seed": seed}))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sample_plan(counts, stride):
    """Tail classes sampled (every stride-th), and the gap-rule rows of one epoch for them."""
    tail = (counts > 0) & (counts <= 100)
    chosen = np.flatnonzero(tail)[::stride]
    need = np.zeros(len(counts), np.int64)
    need[chosen] = counts.max() - counts[chosen]
    return tail, need


def worker_ours(bank, stride, out):
    base = rss_mb()
    cfg = dict(k=K, tukey=LAM, beta_init=BETA, gamma=GAMMA, gamma_mode="isotropic", tail="max-count",
               tail_max_count=100, tail_fraction=0.5, max_rows_per_class=0, balance_head=True, seed=0,
               device="cpu", jobs=2, sample_per_class=0)
    afg = AdaptiveFeatureGenerator(cfg)
    t0 = time.perf_counter()
    afg.fit(bank)
    fit = time.perf_counter() - t0
    fit_rss = rss_mb()
    tail, need = sample_plan(bank.train_counts, stride)                  # the same tail rows as the reference
    rows, t0 = 0, time.perf_counter()
    sampler = afg.sampler
    for segments in gap_batches(need, tail, bank.train_counts, 2 ** 13):
        rows += len(sampler.draw(segments, torch.Generator().manual_seed(rows))["label"])
    dt = time.perf_counter() - t0
    out.update(fit_s=fit, fit_parts=afg.fit_seconds, rows=rows, sample_s=dt, rows_per_s=rows / dt,
               base_mb=base, fit_peak_mb=fit_rss, peak_mb=rss_mb(), qr_classes=len(afg.qr))


def gap_batches(need, tail, counts, batch_rows):
    """Segments of one gap-rule epoch (each tail class's rows round its samples), batch_rows at a time."""
    batch, size = [], 0
    for k in np.flatnonzero(need):
        for start in range(0, int(need[k]), batch_rows):
            n = min(batch_rows, int(need[k]) - start)
            batch.append((int(k), (start + np.arange(n)) % int(counts[k]) if tail[k] else None, n))
            size += n
            if size >= batch_rows:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def reference_fit(bank):
    """Means, every class covariance (C, D, D) and supports: the peers' fit, vectorised per class."""
    m = class_moments(bank.iter_chunks("train"), bank.train_counts, LAM, n_jobs=2)
    counts, D = m.counts, m.feature_dim
    covs = torch.zeros((len(counts), D, D))                               # the C x D x D the peers keep

    def cov(k):
        if counts[k] > 1:
            xc = m.centred[k]
            torch.matmul(xc.T, xc, out=covs[k]).div_(counts[k] - 1)                      # Eq. (6)

    parallel_classes(cov, range(len(counts)), 2)
    release_memory()
    tail_classes = np.flatnonzero((counts > 0) & (counts <= 100))
    sup = support_classes(m, tail_classes, K, n_jobs=2)
    return m, covs, sup


def reference_sample(m, covs, sup, need, batch=None):
    """Per tail sample: calibrated mean/covariance (Eq. 8-9), Cholesky, rows; batched by row count."""
    D = covs.shape[1]
    batch = batch or max(2, 2 ** 24 // (D * D * 4))                      # ~16 MB of covariances per batch
    jobs = []                                                            # (tail sample id, rows) for each sample
    for k in np.flatnonzero(need):
        per = np.bincount(np.arange(need[k]) % m.counts[k], minlength=m.counts[k])   # round-robin
        jobs += [(sup.start[k] + j, int(r)) for j, r in enumerate(per) if r]
    jobs.sort(key=lambda t: t[1])
    groups = [jobs[i:i + batch] for i in range(0, len(jobs), batch)]
    gen, rows = torch.Generator().manual_seed(0), [0]
    means32, eye = m.means.float(), torch.eye(D)

    def run(group):
        ids, reps = np.array([g[0] for g in group]), max(g[1] for g in group)
        c, cls = sup.label[ids], sup.classes[ids]
        w = torch.from_numpy(sup.weights[ids]).double()
        w = (w / w.sum(1, keepdim=True)).float()                                         # (B, K)
        cal = torch.empty((len(ids), D, D))
        for b in range(len(ids)):                       # in place, one pass per term: no (B, K, D, D) gathers
            torch.mul(covs[c[b]], (1 - BETA) ** 2, out=cal[b]).diagonal().add_(GAMMA)            # Eq. (9)
            for j in np.flatnonzero(cls[b] >= 0):
                cal[b].add_(covs[cls[b, j]], alpha=BETA ** 2 * float(w[b, j]))
        jitter = 1e-5 * cal.diagonal(dim1=1, dim2=2).mean(1)            # calibrated covariances are often
        cal.diagonal(dim1=1, dim2=2).add_(jitter[:, None])                # singular (N_k < D): jitter up front
        L, info = torch.linalg.cholesky_ex(cal)
        while (info != 0).any():                                          # still not PD: more jitter, retry
            bad = info != 0
            cal[bad] += jitter[bad, None, None] * eye
            jitter[bad] *= 10
            L[bad], info[bad] = torch.linalg.cholesky_ex(cal[bad])
        x_hat = torch.stack([m.centred[cc][j - sup.start[cc]] for cc, j in zip(c, ids)]) + means32[c]
        mean = (1 - BETA) * x_hat + BETA * torch.einsum("bk,bkd->bd", w, means32[cls])   # Eq. (8)
        e = torch.randn((len(ids), D, reps), generator=gen)
        s = mean[:, :, None] + torch.bmm(L, e)
        rows[0] += sum(g[1] for g in group)
        del s, cal, L, e
        release_memory()                                  # the same heap hygiene as ours

    parallel_classes(lambda i: run(groups[i]), range(len(groups)), 2)
    return rows[0]


def worker_reference(bank, stride, out):
    base = rss_mb()
    t0 = time.perf_counter()
    m, covs, sup = reference_fit(bank)
    fit = time.perf_counter() - t0
    fit_rss = rss_mb()
    _, need = sample_plan(bank.train_counts, stride)
    t0 = time.perf_counter()
    rows = reference_sample(m, covs, sup, need)
    dt = time.perf_counter() - t0
    out.update(fit_s=fit, rows=rows, sample_s=dt, rows_per_s=rows / dt, base_mb=base, fit_peak_mb=fit_rss,
               peak_mb=rss_mb(), cov_mb=covs.numel() * 4 / 2 ** 20)


def run_worker(side: str, folder: Path, stride: int, timeout: int) -> dict:
    """One side in a fresh interpreter; returns its JSON figures (or the error)."""
    cmd = [sys.executable, __file__, "--worker", side, "--bank-dir", str(folder), "--stride", str(stride)]
    t0 = time.time()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s"}
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"rc {res.returncode}"}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.time() - t0
    return out


def bench_scale(name: str, cache: Path, timeout: int, repeat: int) -> dict:
    spec = SCALES[name]
    counts, dim = spec["counts"](), spec["dim"]
    folder = cache / f"{name}"
    print(f"[{name}] bank: {len(counts)} classes x {dim}-d, {counts.sum():,} rows (cache {folder})", file=sys.stderr)
    make_cache(folder, counts, dim)
    result = {"classes": len(counts), "dim": dim, "rows": int(counts.sum()),
              "tail_classes": int(((counts > 0) & (counts <= 100)).sum()),
              "tail_samples": int(counts[(counts > 0) & (counts <= 100)].sum()),
              "sampled_tail_classes_stride": {"ours": spec["stride"], "reference": spec["ref_stride"]}}
    ref_folder = folder
    if spec.get("ref_subset"):              # the reference cannot hold C x D x D here: run it on every n-th class
        sub = counts[::spec["ref_subset"]]
        ref_folder = cache / f"{name}-ref-subset"
        make_cache(ref_folder, sub, dim)
        result["reference_subset"] = {"classes": len(sub), "rows": int(sub.sum()), "every_nth_class": spec["ref_subset"]}
    runs = {"ours": [], "reference": []}
    for _ in range(repeat):                 # alternate the sides, so load from other processes hits both
        runs["ours"].append(run_worker("ours", folder, spec["stride"], timeout))
        runs["reference"].append(run_worker("reference", ref_folder, spec["ref_stride"], timeout))
        print(f"[{name}] ours: {runs['ours'][-1]}\n[{name}] reference: {runs['reference'][-1]}", file=sys.stderr)
    for side, got in runs.items():
        result[side] = best_of(got)
    result["ratios"] = ratios(result, counts, dim)
    return result


def best_of(runs: list) -> dict:
    """Fastest fit and sampling over the repeats (the machine is shared), median peak memory; raw runs kept."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    best = dict(min(ok, key=lambda r: r["fit_s"]))
    fastest = min(ok, key=lambda r: r["sample_s"] / r["rows"])
    best.update(rows=fastest["rows"], sample_s=fastest["sample_s"], rows_per_s=fastest["rows_per_s"])
    best["peak_mb"] = float(np.median([r["peak_mb"] for r in ok]))
    best["base_mb"] = float(np.median([r["base_mb"] for r in ok]))
    best["runs"] = runs
    return best


def ratios(r: dict, counts, dim: int) -> dict:
    o, f = r["ours"], r["reference"]
    if "error" in o or "error" in f:
        return {}
    above = lambda s: s["peak_mb"] - s["base_mb"]
    out = {"rows_per_s": f and o["rows_per_s"] / f["rows_per_s"]}
    if "reference_subset" in r:             # extrapolate the reference to every class (state it in the report)
        sub = r["reference_subset"]
        full_cov_mb = len(counts) * dim * dim * 4 / 2 ** 20
        rows_mb = (counts.sum() - sub["rows"]) * dim * 4 / 2 ** 20
        f["extrapolated_peak_above_base_mb"] = above(f) - f["cov_mb"] + full_cov_mb + rows_mb
        # loading and covariances scale with the rows; the support search costs what ours does (same code)
        f["extrapolated_fit_s"] = f["fit_s"] * counts.sum() / sub["rows"] + o["fit_parts"]["supports"]
        out["fit"] = f["extrapolated_fit_s"] / o["fit_s"]
        out["memory_ours_over_reference"] = above(o) / f["extrapolated_peak_above_base_mb"]
    else:
        out["fit"] = f["fit_s"] / o["fit_s"]
        out["memory_ours_over_reference"] = above(o) / above(f)
        out["memory_ours_over_reference_total_rss"] = o["peak_mb"] / f["peak_mb"]
    return out


def write_results(results: dict, folder: Path):
    """Merge into generate.json (a run of one scale keeps the others' figures) and rewrite generate.md."""
    folder.mkdir(parents=True, exist_ok=True)
    old = folder / "generate.json"
    if old.is_file():
        results = {**json.loads(old.read_text()).get("scales", {}), **results}
    meta = {"machine": platform.processor() or platform.machine(), "cpus": torch.get_num_threads(),
            "torch": torch.__version__, "when": time.strftime("%Y-%m-%d %H:%M"),
            "settings": {"beta": BETA, "gamma": GAMMA, "k": K, "tukey": LAM}}
    (folder / "generate.json").write_text(json.dumps({"meta": meta, "scales": results}, indent=1, sort_keys=True))
    lines = ["# glag-generate vs dense reference", "", f"{meta['when']}, torch {meta['torch']}, "
             f"{meta['cpus']} threads; beta {BETA}, K {K}, lambda {LAM}. fit x, rows/s x: ours over reference; "
             "memory: peak above the post-import baseline, ours / reference.", "",
             "| scale | side | fit s | rows/s | peak MB (above base) | fit x | rows/s x | memory ours/ref |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        q = r.get("ratios", {})
        for side in ("ours", "reference"):
            s = r[side]
            if "error" in s:
                lines.append(f"| {name} | {side} | error: {s['error']} | | | | | |")
                continue
            peak = f"{s['peak_mb']:,.0f} ({s['peak_mb'] - s['base_mb']:,.0f})"
            if "extrapolated_peak_above_base_mb" in s:
                peak += f"; all classes: ~{s['extrapolated_peak_above_base_mb'] / 1024:,.0f} GiB"
            ratio = (f"{q.get('fit', 0):.1f} | {q.get('rows_per_s', 0):.1f} | "
                     f"{q.get('memory_ours_over_reference', 0):.3f}") if side == "ours" and q else "| |"
            lines.append(f"| {name} | {side} | {s['fit_s']:.1f} | {s['rows_per_s']:,.0f} | {peak} | {ratio} |")
    (folder / "generate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="all", choices=["all"] + sorted(SCALES))
    p.add_argument("--quick", action="store_true", help="only the tiny scale: a smoke run in seconds")
    p.add_argument("--cache", default=str(ROOT / "bench" / "results" / "cache"), help="random banks kept here")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--timeout", type=int, default=1800, help="seconds per side and scale")
    p.add_argument("--repeat", type=int, default=2, help="runs per side: best time, median memory")
    p.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    p.add_argument("--bank-dir", help=argparse.SUPPRESS)
    p.add_argument("--stride", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        out = {}
        (worker_ours if a.worker == "ours" else worker_reference)(FileBank(a.bank_dir), a.stride, out)
        print(json.dumps(out))
        return
    names = ["quick"] if a.quick else ([n for n in SCALES if n != "quick"] if a.scale == "all" else [a.scale])
    results = {n: bench_scale(n, Path(a.cache), a.timeout, 1 if a.quick else a.repeat) for n in names}
    write_results(results, Path(a.out))


if __name__ == "__main__":
    main()
