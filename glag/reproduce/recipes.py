"""Reproduction recipes for `glag-reproduce`, and the stage-two methods they compare, in one place.

A recipe names a dataset, its imbalance ratios (the first is the default), the
stage-one losses (one bank each), the stage-two methods run from every bank,
how many seeds, and the options it adds to each tool. Those options are only the
recipe's deviations: everything else is the tool's own default, e.g. the
dataset's stage-one recipe in extract/recipes.py (backbone, epochs, batch size,
lr, augmentation) and stage two's 40 generation epochs (paper Sec. 5).
docs/reproduce.md lists the resolved values.
"""
from dataclasses import dataclass, field

from glag.data.errors import GlagError
from glag.extract.names import LOSS_NAMES

# Table 6/7 of the paper: the stage-one losses compared, and the stage-two rows run from each bank.
ALL_LOSSES = ("ce", "graloss", "logit_adjust", "balanced_softmax", "ldam")
ALL_METHODS = ("crt", "lws", "tau_norm", "posthoc_la", "mislas", "glag", "glag+AD", "glag+AD+KD", "glag+KD-tuned")
# Options of the runs a reproduction makes: plots and model.pt are per-run extras nobody reads here.
STAGE2_QUIET = {"plots": False, "deploy": False}

METHODS: dict[str, dict] = {}
TUNED: dict[str, dict] = {}
RECIPES: dict[str, "Recipe"] = {}


def register_method(name: str, tune: dict | None = None, **options):
    """A stage-two row: `glag-classify run` options (underscored keys). Registering twice raises.

    tune: {option: [values]}: the row is a family of runs, one per point of the grid, and per bank the
        point with the best val accuracy is the row's result (test labels choose nothing).
    """
    if name in METHODS:
        raise KeyError(f"reproduce method {name!r} is already registered")
    if "method" not in options:
        raise KeyError(f"reproduce method {name!r}: options must name the run's --method")
    METHODS[name] = dict(options)
    if tune:
        TUNED[name] = {k: list(v) for k, v in tune.items()}


def tune_points(name: str) -> list:
    """[(run name, options)] of a tuned method's grid, or [(name, {})] for a plain one."""
    import itertools
    grid = TUNED.get(name)
    if not grid:
        return [(name, {})]
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    return [(name + "~" + "_".join(f"{k}{v:g}" for k, v in p.items()), p) for p in points]


def needs_store(name: str) -> bool:
    """True if the method trains on synthetic rows, so its bank needs a `glag-generate` store first."""
    return METHODS[name]["method"] == "glag" and METHODS[name].get("synthetic", True)


register_method("crt", method="crt")
register_method("lws", method="lws")
register_method("tau_norm", method="tau_norm")
register_method("ncm", method="ncm")
register_method("posthoc_la", method="posthoc_la")
register_method("mislas", method="mislas")
# Table 7's GLAG ablation: synthetic rows with fixed beta and no KD, then + adaptive beta, then + KD.
register_method("glag", method="glag", ad=False, kd=False)
register_method("glag+AD", method="glag", ad=True, kd=False)
register_method("glag+AD+KD", method="glag", ad=True, kd=True)
# The equal-budget baseline of GLAG's AD: fixed beta (with KD), beta and gamma chosen on val as the paper
# selects gamma from {0, 0.1}.
register_method("glag+KD-tuned", method="glag", ad=False, kd=True,
                tune={"beta_init": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], "gamma": [0.0, 0.1]})


@dataclass(frozen=True)
class Recipe:
    """One reproduction preset.

    Attributes:
        name: registry key (`--recipe`).
        dataset: `glag-extract --dataset` name.
        ims: imbalance ratios, the first is the default; () = the dataset's listed long tail.
        losses, methods: names in glag.extract.losses.LOSSES and METHODS.
        seeds: how many seeds (0 .. seeds-1).
        extract, generate, classify: options added to every call of that tool (underscored keys).
        device: "cpu" or "gpu": what the schedule is sized for (auto picks by the machine).
        note: one line for the results table (what is reduced, what to know).
        aliases: other `--dataset` names that select this recipe.
    """
    name: str
    dataset: str
    ims: tuple
    losses: tuple = ALL_LOSSES
    methods: tuple = ALL_METHODS
    seeds: int = 3
    extract: dict = field(default_factory=dict)
    generate: dict = field(default_factory=dict)
    classify: dict = field(default_factory=dict)
    device: str = "cpu"
    note: str = ""
    aliases: tuple = ()


def register_recipe(name: str, **fields) -> Recipe:
    """Add a recipe (checked against the loss and method registries). Registering twice raises."""
    if name in RECIPES:
        raise KeyError(f"reproduce recipe {name!r} is already registered")
    recipe = Recipe(name=name, **fields)
    check_names(recipe.losses, recipe.methods, f"recipe {name!r}")
    RECIPES[name] = recipe
    return recipe


def check_names(losses, methods, where: str) -> None:
    """Raise GlagError naming unknown losses or methods and the valid ones."""
    bad = [x for x in losses if x not in LOSS_NAMES]
    if bad:
        raise GlagError(f"{where}: unknown stage-one loss(es) {bad}; choose from {list(LOSS_NAMES)}")
    bad = [x for x in methods if x not in METHODS]
    if bad:
        raise GlagError(f"{where}: unknown stage-two method(s) {bad}; choose from {sorted(METHODS)}")


_SMALL_STORE = {"dtype": "float16"}   # the generator's factors in half precision: half the store

register_recipe("digits", dataset="digits", ims=(10.0,),
                generate=_SMALL_STORE, classify=STAGE2_QUIET,
                note="scikit-learn digits 8x8, resnet_small, 30 epochs: a smoke test of the whole comparison")
# Every CPU / GPU recipe dumps 8 augmented views of the train split: the heads retrained on the bank see
# augmented rows, as image-based retraining does (docs/stage-two.md); a few seconds to a minute per bank.
_VIEWS = {"views": 8}
register_recipe("fashion-mnist", dataset="fashion-mnist", ims=(100.0, 10.0), aliases=("fmnist",),
                extract=dict(_VIEWS, epochs=8), generate=_SMALL_STORE, classify=STAGE2_QUIET,
                note="sized for 2 CPU cores: resnet_small, 8 stage-one epochs (reduced), 8 views")
# Sized to finish in about an hour on two cores (~15 min per bank): CE and GraLoss, one seed; more with
# --losses / --seeds / --im.
register_recipe("cifar10-jpeg-cpu", dataset="cifar10-jpeg", ims=(100.0, 50.0, 10.0), losses=("ce", "graloss"),
                seeds=1, extract=dict(_VIEWS, epochs=30), generate=_SMALL_STORE, classify=STAGE2_QUIET,
                note="CPU schedule: ResNet-32, 30 stage-one epochs instead of 200 (reduced), 8 views, CE and GraLoss "
                     "banks, 1 seed")
register_recipe("cifar10-jpeg-gpu", dataset="cifar10-jpeg", ims=(100.0, 50.0, 10.0), device="gpu",
                extract=_VIEWS, generate={"dtype": "float16"}, classify=STAGE2_QUIET,
                note="full schedule: ResNet-32, 200 stage-one epochs, 8 views")
# The many-class check on two CPU cores: Tiny-ImageNet-LT at 32x32 with the CIFAR ResNet-32, CE and GraLoss.
register_recipe("tiny-imagenet-cpu", dataset="tiny-imagenet", ims=(100.0,), losses=("ce", "graloss"), seeds=1,
                aliases=("tiny",), extract=dict(_VIEWS, image_size=32, backbone="resnet32", crop_pad=4, epochs=30),
                generate=_SMALL_STORE, classify=STAGE2_QUIET,
                note="CPU many-class check: images resized to 32x32, ResNet-32, 30 stage-one epochs (reduced), "
                     "8 views, CE and GraLoss banks, 1 seed")
register_recipe("tiny-imagenet-gpu", dataset="tiny-imagenet", ims=(100.0,), device="gpu", aliases=("tiny",),
                extract=_VIEWS, generate={"dtype": "float16"}, classify=STAGE2_QUIET,
                note="ResNet-10, 100 stage-one epochs")
# The paper's own settings (Sec. 5), for users who have these datasets; tested on fixture files only.
register_recipe("cifar100-paper", dataset="cifar100", ims=(100.0, 200.0, 50.0, 10.0), device="gpu",
                generate={"dtype": "float16"}, classify=STAGE2_QUIET,
                note="paper Sec. 5: ResNet-32, 200 stage-one epochs, 40 generation epochs, beta_init 0.6")
register_recipe("imagenet-lt-paper", dataset="imagenet-lt", ims=(), device="gpu", aliases=("imagenet",),
                generate={"dtype": "float16"}, classify=STAGE2_QUIET,
                note="paper Sec. 5: ResNet-10, 200 stage-one epochs, 40 generation epochs")
register_recipe("inat-paper", dataset="inat2018", ims=(), device="gpu", aliases=("inat",),
                generate={"dtype": "float16"}, classify=dict(STAGE2_QUIET, kd_s=0.5),
                note="paper Sec. 5: ResNet-50, 90 epochs, s = 0.5 (stage one and KD), 40 generation epochs; pass the "
                     "SSP model with --extract-args '--pretrained PATH'")


def find_recipe(name: str, dataset: str, cuda: bool) -> Recipe:
    """The recipe `name`, or for name "auto" the one for `dataset` (by device when there are several).

    Raises GlagError when nothing matches or `dataset` contradicts the named recipe.
    """
    if name != "auto":
        if name not in RECIPES:
            raise GlagError(f"--recipe {name!r}: unknown; choose from {sorted(RECIPES)}")
        recipe = RECIPES[name]
        if dataset and dataset != recipe.dataset and dataset not in recipe.aliases:
            raise GlagError(f"--recipe {name} is for dataset {recipe.dataset!r}, not --dataset {dataset!r}; "
                            "drop one of them")
        return recipe
    if not dataset:
        raise GlagError(f"--recipe auto needs --dataset (or $DATASET); or pass --recipe, one of {sorted(RECIPES)}")
    found = [r for r in RECIPES.values() if dataset in (r.dataset, r.name, *r.aliases)]
    if not found:
        raise GlagError(f"--dataset {dataset!r}: no reproduction recipe; pass --recipe, one of {sorted(RECIPES)}")
    wanted = "gpu" if cuda else "cpu"
    return next((r for r in found if r.device == wanted), found[0])
