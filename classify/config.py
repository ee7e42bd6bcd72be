"""Every stage-two option in one place: defaults, help, method presets, and their resolution.

The CLI builds its click options from OPTIONS, and a sweep grid may set exactly
these keys, so the defaults exist once. "auto" values are filled from the bank
or the synthetic store when a run starts (`resolve_auto`), and the resolved
config is what every output records.
"""
import hashlib
import json
from pathlib import Path

from glag.data.errors import GlagError
from glag.data.provenance import config_json
from glag.data.splits import RULES


AUTO = "auto"
# The registered heads (classify/heads/), as plain names for --help without torch; tests check they match HEADS.
HEAD_NAMES = ("linear", "lws", "ncm", "posthoc_la", "tau_norm")

# name: (default, help). Kinds: bool -> on/off flag, "auto" defaults -> float or "auto".
OPTIONS = {
    "bank": ("", "Feature bank (bank.h5); empty: the bank of --dataset, else the current bank (runs/current.json), "
                 "else the only bank under --runs-root."),
    "dataset": ("", "Dataset whose bank to use when --bank is empty (also read from $DATASET)."),
    "runs_root": ("runs", "Folder searched for banks when --bank is empty."),
    "out": (AUTO, "Folder that holds run folders; auto: <bank folder>/stage2."),
    "run": (AUTO, "Run folder name; auto: <method>-<hash of the resolved config>."),
    "overwrite": (False, "Replace an existing run folder of the same name."),
    "method": ("glag", "Preset filling head, synthetic, sampler, ad and kd unless given (see docs/stage-two.md)."),
    "head": ("linear", "Stage-two head (linear = cRT's re-trained classifier)."),
    "store": (AUTO, "Synthetic store (.h5); auto: the one named in <bank folder>/synthetic/latest.json."),
    "synthetic": (True, "Add the store's synthetic tail rows (rebuilt every epoch) to the real rows."),
    "space": ("raw", "Head's feature space: raw (mixed rows mapped back by inverse Tukey) or tukey (all rows "
                     "transformed)."),
    "tukey_lambda": (AUTO, "Tukey lambda for --space tukey; auto: the store's, else 0.5."),
    "sampler": ("class", "Batch sampling over real + synthetic rows: class-balanced or instance."),
    "views": (AUTO, "Augmented train views (glag-extract --views): heads that train draw one per row per epoch; "
                    "auto: every view the bank holds, 0: the un-augmented rows."),
    "loss": ("ce", "Stage-two loss (loss_CE of Eq. 11), any stage-one loss by name."),
    "epochs": (40, "Stage-two training epochs; GLAG draws fresh synthetic rows every epoch."),
    "epoch_size": ("auto", "Sampler draws per epoch from the real + synthetic pool (each class synthetic at its gap "
                           "rate): pool (as many as the gap-rule pool holds, C x N_max), real (as many as the bank's "
                           "train rows), auto (the pool, cut to max(real, 128 batches)) or a number. Without "
                           "synthetic rows an epoch is len(train) draws."),
    "batch_size": (512, "Rows per SGD step."),
    "lr": (0.2, "Initial learning rate (cosine schedule to 0)."),
    "momentum": (0.9, "SGD momentum."),
    "weight_decay": (5e-4, "SGD weight decay."),
    "seed": (0, "Seed for head initialisation, sampling and gamma noise."),
    "device": (AUTO, "cpu, cuda, cuda:N, or auto (cuda when available): where rows, generator and heads live."),
    "draw_chunk": (AUTO, "Batches whose synthetic rows are drawn at once (one GEMM per class per chunk; the chunk is "
                         "part of what fixes the rows); auto: 32 on a CPU, 256 on a GPU (fewer kernel launches)."),
    "amp": ("auto", "bf16: the heads' matrix products in bfloat16 autocast, none: float32, auto: bf16 for large "
                    "heads (D x C >= 2^20) where the device computes it natively (CUDA, CPUs with AMX), else none "
                    "(docs/stage-two.md has what it changes)."),
    "threads": (0, "CPU threads for torch; 0: one for small heads (D * C < 2^20: threads cost more than they "
                   "give there, and thrash when other processes share the cores), else torch's setting."),
    "groups": ("bank", f"Many/medium/few rule: bank (the bank config's 'groups', else auto) or one of {list(RULES)}."),
    "ad": (True, "Adaptive beta (AD): move each tail class's beta towards higher val accuracy (--ad-criterion)."),
    "ad_rule": ("paired", "AD rule: paired (probe heads at beta +/- --ad-delta, --ad-criterion) or sign (the old "
                          "rule: sign of the class's val-accuracy change)."),
    "ad_delta": (0.1, "paired AD: beta offset of the two probe heads."),
    "ad_criterion": ("accuracy", "paired AD: what the probes compare on val: accuracy (balanced), soft_error (1 - p_y, "
                                 "temperature-calibrated) or ce (cross-entropy)."),
    "ad_momentum": (0.5, "paired AD: weight of the previous epochs' slope in the smoothed slope."),
    "ad_probe_every": (1, "paired AD: the probe heads take an SGD step on every n-th batch only (1: every batch; 2 "
                          "halves their cost; docs/stage-two.md has what it changes)."),
    "ad_warmup": (0, "AD: epochs before beta first moves."),
    "ad_pool": (0.5, "paired AD: share of each class's own slope kept (0: one beta for all tail classes, 1: each "
                     "class on its own slope)."),
    "ad_average": (0.5, "AD with --ad-refit: the refit's betas are their mean over this last fraction of the search."),
    "ad_refit": (True, "AD: after the search, train the head again from its start with the final betas fixed."),
    "beta_init": (AUTO, "Starting beta of every class; auto: the store's beta_init."),
    "beta_step": (0.05, "AD: the largest move of a beta per epoch."),
    "beta_min": (0.0, "Lower bound of beta."),
    "beta_max": (1.0, "Upper bound of beta."),
    "gamma": (AUTO, "Dispersion gamma added when mixing (Eq. 9); auto: the store's gamma."),
    "kd": (True, "Knowledge distillation from stage one on head-class rows, weight alpha(T) (Eq. 11)."),
    "kd_temperature": (2.0, "KD temperature T (loss scaled by T^2)."),
    "kd_form": (AUTO, "alpha(T) form (Eq. 3); auto: the bank's graloss_form, else convex."),
    "kd_c": (AUTO, "alpha(T) curvature c (Eq. 3); auto: the bank's graloss_c, else 2."),
    "kd_s": (AUTO, "alpha(T) scale s (Eq. 3); auto: the bank's graloss_s, else 1."),
    "lws_init": (1.0, "LWS: starting value of every per-class scale."),
    "linear_init": ("scratch", "linear head: scratch (cRT: fresh weights) or stage1 (start from the stage-one head)."),
    "tau_norm_taus": ("0:2:0.1", "tau-norm: one tau, or START:STOP:STEP swept on val."),
    "tau_norm_bias": (False, "tau-norm: keep the stage-one bias (Kang et al. drop it)."),
    "ncm_metric": ("cosine", "NCM: cosine or euclidean."),
    "posthoc_la_taus": ("0:2:0.1", "Post-hoc logit adjustment: one tau, or START:STOP:STEP swept on val."),
    "deploy": (True, "Write model.pt: stage one's backbone (from its checkpoint beside the bank) with this head, "
                     "loadable with glag.extract.backbones.load_deployed."),
    "plots": (True, "Write PNG plots (matplotlib) and the t-SNE of a few classes."),
    "tensorboard": ("", "Also write TensorBoard events under this folder, in <folder>/<run> (needs the "
                        "tensorboard extra: pip install 'tensorboard>=2.10'); empty: none."),
    "tsne_classes": (6, "Classes in the t-SNE plot (half most, half least frequent)."),
}
CHOICES = {"space": ("raw", "tukey"), "amp": (AUTO, "none", "bf16"), "sampler": ("class", "instance"), "groups": ("bank",) + RULES,
           "ad_rule": ("paired", "sign"), "ad_criterion": ("accuracy", "soft_error", "ce"), "linear_init": ("scratch", "stage1"),
           "ncm_metric": ("cosine", "euclidean"), "kd_form": (AUTO, "convex", "linear", "concave")}
AUTO_FLOATS = ("tukey_lambda", "beta_init", "gamma", "kd_c", "kd_s")
AUTO_INTS = ("views", "draw_chunk")

# What each --method fills in for the options the user did not give.
_POSTHOC = {"synthetic": False, "ad": False, "kd": False, "epochs": 0}
PRESETS = {
    "glag": {"head": "linear", "synthetic": True, "sampler": "class", "ad": True, "kd": True},
    "crt": {"head": "linear", "synthetic": False, "sampler": "class", "ad": False, "kd": False},
    "lws": {"head": "lws", "synthetic": False, "sampler": "class", "ad": False, "kd": False},
    "tau_norm": dict(_POSTHOC, head="tau_norm"),
    "ncm": dict(_POSTHOC, head="ncm"),
    "posthoc_la": dict(_POSTHOC, head="posthoc_la"),
    # MiSLAS's stage two on the bank: the stage-one classifier retrained with label-aware smoothing on
    # class-balanced rows (its BN shift learning needs images: docs/stage-two.md).
    "mislas": {"head": "linear", "linear_init": "stage1", "loss": "las", "synthetic": False, "sampler": "class",
               "ad": False, "kd": False},
}
DRAW_CHUNK = {"cpu": 32, "cuda": 256}      # --draw-chunk auto, in batches
# Keys that name where things go, not what is computed: left out of the run's hash.
_NOT_HASHED = ("run", "out", "overwrite", "plots", "deploy", "tsne_classes", "device", "threads", "runs_root",
               "dataset", "bank", "tensorboard")


def defaults(extra: dict | None = None) -> dict:
    """All options at their defaults, plus stage-two loss options (e.g. graloss_c) from `extra`."""
    return dict({k: v for k, (v, _) in OPTIONS.items()}, **(extra or {}))


def apply_preset(cfg: dict, explicit) -> dict:
    """Fill the --method preset into every key not in `explicit` (the options the user set)."""
    if cfg["method"] not in PRESETS:
        raise GlagError(f"--method {cfg['method']!r}: choose from {sorted(PRESETS)}")
    return dict(cfg, **{k: v for k, v in PRESETS[cfg["method"]].items() if k not in explicit})


def _auto(value, fallback):
    return float(fallback) if value in (AUTO, None) else float(value)


def resolve_auto(cfg: dict, bank, store) -> dict:
    """Replace "auto" values by what the bank, the store and the machine say."""
    import torch

    from .rows import views_to_use
    meta = dict(store.attrs, **getattr(store, "mixing", {})) if store is not None else {}
    up = bank.config
    out = dict(cfg, store=str(store.path) if store is not None else "")
    out["tukey_lambda"] = _auto(cfg["tukey_lambda"], meta.get("tukey_lambda", 0.5))
    out["beta_init"] = _auto(cfg["beta_init"], meta.get("beta_init", 0.6))
    out["gamma"] = _auto(cfg["gamma"], meta.get("gamma", 0.0))
    out["gamma_mode"] = str(meta.get("gamma_mode", "isotropic"))
    out["kd_form"] = str(up.get("graloss_form", "convex")) if cfg["kd_form"] == AUTO else cfg["kd_form"]
    out["kd_c"] = _auto(cfg["kd_c"], up.get("graloss_c", 2.0))
    out["kd_s"] = _auto(cfg["kd_s"], up.get("graloss_s", 1.0))
    out["groups"] = str(up.get("groups", "auto")) if cfg["groups"] == "bank" else cfg["groups"]
    if out["groups"] not in RULES:
        out["groups"] = "auto"  # a bank config from elsewhere may name a rule we do not know
    from .heads import HEADS
    # post-hoc heads read the un-augmented rows only: their runs record (and hash) no views
    out["views"] = views_to_use(bank, cfg["views"]) if HEADS[cfg["head"]].trainable else 0
    if cfg["device"] == AUTO:
        out["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    out["amp"] = resolve_amp(cfg["amp"], out["device"], bank.feature_dim * bank.num_classes)
    if cfg["draw_chunk"] == AUTO:
        out["draw_chunk"] = DRAW_CHUNK["cuda" if torch.device(out["device"]).type == "cuda" else "cpu"]
    out["bank"], out["bank_fingerprint"] = str(bank.path), bank.fingerprint
    return out


def resolve_amp(option: str, device, head_size: int) -> str:
    """--amp auto: bf16 for heads of D x C >= 2^20 where the device computes it natively; small heads keep
    float32 (there bf16 costs more than it saves, and their results stay those of the float32 runs)."""
    if option != AUTO:
        return option
    return native_bf16(device) if head_size >= 2 ** 20 else "none"


def native_bf16(device) -> str:
    """"bf16" where the device multiplies bfloat16 natively (a CUDA GPU that supports it, a CPU with AMX), else
    "none": elsewhere autocast would emulate it, slower than float32."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    try:
        with open("/proc/cpuinfo") as f:
            return "bf16" if any("amx_bf16" in line.split() for line in f if line.startswith("flags")) else "none"
    except OSError:
        return "none"


def check(cfg: dict, bank) -> None:
    """Refuse combinations that cannot run, or cannot mean what config.json would record, naming the option;
    say so (one note) when the bank has no val split and the run needs none."""
    from .heads import HEADS, own_options
    from .plan import epoch_size
    _check_posthoc(cfg, HEADS[cfg["head"]])
    if cfg["ad"] and not cfg["synthetic"]:
        raise GlagError("--ad adapts the beta of synthetic rows; it needs synthetic rows (drop --no-synthetic, "
                        "or pass --no-ad)")
    if cfg["ad"] and "val" not in bank.splits:
        raise GlagError(f"--ad: {bank.path} has no val split to adapt beta on; pass --no-ad or rebuild the bank "
                        "with a validation split")
    if cfg["space"] == "tukey" and HEADS[cfg["head"]].reuses_stage1(own_options(cfg["head"], cfg)):
        raise GlagError(f"--space tukey with --head {cfg['head']}: this head applies the stage-one weights, which "
                        "act on raw features; use --space raw (or --head linear --linear-init scratch)")
    if not cfg["beta_min"] <= cfg["beta_max"]:
        raise GlagError(f"--beta-min {cfg['beta_min']} > --beta-max {cfg['beta_max']}")
    epoch_size(cfg["epoch_size"], 1, 1)                  # auto, real, pool or a number >= 1, named if not
    if int(cfg.get("ad_probe_every", 1)) < 1:
        raise GlagError(f"--ad-probe-every {cfg['ad_probe_every']}: give 1 (every batch) or more")
    if cfg["draw_chunk"] != AUTO and int(cfg["draw_chunk"]) < 1:
        raise GlagError(f"--draw-chunk {cfg['draw_chunk']}: give a number of batches >= 1, or auto")
    for key in ("epochs", "batch_size"):
        if cfg[key] < (1 if key == "batch_size" else 0):
            raise GlagError(f"--{key.replace('_', '-')} must be positive, got {cfg[key]}")
    from glag.cli.tensorboard import complaint
    problem = complaint(cfg.get("tensorboard"))       # sweeps and the API reach here without the click callback
    if problem:
        raise GlagError(problem)
    if "val" not in bank.splits:
        import click
        click.echo(f"note: {bank.path} has no val split: nothing in this run is tuned on val (it needs nothing "
                   "there) and no val accuracy is measured (val-acc shows nan)", err=True)


def _check_posthoc(cfg: dict, head) -> None:
    """A head fitted without training uses no synthetic rows, AD or KD: refuse them rather than record them as on."""
    used = [k for k in ("synthetic", "ad", "kd") if cfg[k]]
    if head.trainable or not used:
        return
    preset = [f"--{k}" for k in used if PRESETS.get(cfg["method"], {}).get(k)]
    by = f" (--method {cfg['method']} turns {', '.join(preset)} on)" if preset else ""
    raise GlagError(f"--head {cfg['head']} is fitted without training: {', '.join('--' + k for k in used)} cannot "
                    f"apply to it{by}; use --method {cfg['head']}, or pass {' '.join('--no-' + k for k in used)}")


def run_hash(cfg: dict) -> str:
    """8 hex digits of the resolved config, minus where-to-write keys (the bank is its fingerprint)."""
    keep = {k: v for k, v in cfg.items() if k not in _NOT_HASHED}
    return hashlib.sha256(config_json(keep).encode()).hexdigest()[:8]


def run_dir(cfg: dict, bank_path) -> Path:
    """Where the run goes: <out>/<run>, with out = <bank folder>/stage2 and run = <method>-<hash> by default."""
    out = Path(bank_path).parent / "stage2" if cfg["out"] == AUTO else Path(cfg["out"])
    name = f"{cfg['method']}-{run_hash(cfg)}" if cfg["run"] == AUTO else cfg["run"]
    if not name or "/" in name or name.startswith("."):
        raise GlagError(f"--run {name!r}: give a plain folder name")
    return out / name


def same_config(run_path: Path, cfg: dict) -> bool:
    """True if `run_path` is a finished run of exactly this (hashed part of the) config."""
    try:
        saved = json.loads((Path(run_path) / "config.json").read_text())["cfg"]
    except (OSError, ValueError, KeyError):
        return False
    return run_hash(saved) == run_hash(cfg)
