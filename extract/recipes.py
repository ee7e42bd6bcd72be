"""Per-dataset training defaults for stage one, in one place.

Every `glag-extract` option that is left unset (None) takes its value from the
dataset's recipe; the resolved values go into the bank's config. Values follow
the paper's implementation details (Sec. 5: SGD momentum 0.9, weight decay
5e-4, cosine schedule; ResNet-32 for CIFAR-LT, ResNet-10/50 for ImageNet-LT,
ResNet-50 with s = 0.5 for 90 epochs on iNaturalist) and the CIFAR-LT
conventions (200 epochs, batch 128, lr 0.1, 5 warm-up epochs, pad-4 crop + flip).
A dataset without a recipe (a user's folder of images) gets `generic_recipe`,
chosen by image size, which keeps every image with its real counts (profile
"listed"); `--im` or `--profile` subsample it (`long_tail_profile`).
"""
from glag.data.errors import GlagError

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

BASE = dict(
    backbone="resnet32", epochs=200, batch_size=128, lr=0.1, warmup_epochs=5, momentum=0.9,
    weight_decay=5e-4, sampler="instance", im=100.0, profile="exp", val_per_class=20, groups="auto",
    crop="pad", crop_pad=4, flip=True, cutout=0, autoaugment="none", mixup=0.0, mean=CIFAR_MEAN, std=CIFAR_STD,
    loss_overrides={},
    threads=0,  # 0 = torch's default (all cores)
)

RECIPES: dict[str, dict] = {}


def register_recipe(name: str, **values):
    """Add a dataset's recipe: BASE updated with `values`. Registering twice raises."""
    if name in RECIPES:
        raise KeyError(f"recipe {name!r} is already registered")
    unknown = set(values) - set(BASE)
    if unknown:
        raise KeyError(f"recipe {name!r}: unknown fields {sorted(unknown)}; known {sorted(BASE)}")
    RECIPES[name] = dict(BASE, **values)


# Tiny gray 8x8 digits: a small net, few epochs, no flips (a mirrored 2 is not a 2), and one
# thread: 8x8 convolutions are too small to split, a second thread only adds synchronisation.
register_recipe("digits", backbone="resnet_small", epochs=30, batch_size=64, lr=0.05, warmup_epochs=1,
                im=10.0, val_per_class=10, groups="relative", crop_pad=1, flip=False,
                mean=(0.5,), std=(0.35,), threads=1)
# Fashion-MNIST: the schedule every Fashion number in the README used (8 epochs; reproduce's recipe adds 8
# views), one thread as for digits: two threads on 28 px ran at 160 img/s beside another job, one at 810.
register_recipe("fashion-mnist", backbone="resnet_small", epochs=8, batch_size=128, lr=0.1, warmup_epochs=1,
                im=100.0, flip=False, crop_pad=2, mean=(0.286,), std=(0.353,), threads=1)
for _name in ("cifar10", "cifar10-jpeg", "cifar100"):
    register_recipe(_name)
register_recipe("tiny-imagenet", backbone="resnet10", epochs=100, batch_size=128, lr=0.1, im=100.0,
                crop_pad=8, mean=IMAGENET_MEAN, std=IMAGENET_STD)
register_recipe("imagenet-lt", backbone="resnet10", epochs=200, batch_size=256, lr=0.1, profile="listed",
                crop="resize", crop_pad=0, mean=IMAGENET_MEAN, std=IMAGENET_STD)
register_recipe("inat2018", backbone="resnet50", epochs=90, batch_size=256, lr=0.1, profile="listed",
                crop="resize", crop_pad=0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                loss_overrides={"graloss_s": 0.5})


def generic_recipe(image_size: int, channels: int) -> dict:
    """Defaults for a dataset with no recipe: CIFAR-style below 64 px, ImageNet-style above."""
    small = image_size <= 32
    mean, std = (CIFAR_MEAN, CIFAR_STD) if channels == 3 else ((0.5,), (0.25,))
    return dict(BASE, backbone="resnet32" if small else "resnet10", crop="pad" if image_size <= 64 else "resize",
                crop_pad=4 if small else (8 if image_size <= 64 else 0), mean=mean, std=std, profile="listed")


def long_tail_profile(options: dict) -> str:
    """--profile; else, for a dataset without a recipe (a user's folder: kept as it is), exp when --im asks
    for a long tail and listed (every image) when not; else the recipe's."""
    if options.get("profile"):
        return options["profile"]
    if options["dataset"] not in RECIPES:
        return "exp" if options.get("im") is not None else "listed"
    return RECIPES[options["dataset"]]["profile"]


def recipe_for(dataset: str, image_size: int, channels: int) -> dict:
    """The recipe of `dataset` (a copy), or the generic one."""
    recipe = dict(RECIPES[dataset]) if dataset in RECIPES else generic_recipe(image_size, channels)
    if len(recipe["mean"]) != channels:
        raise GlagError(f"recipe for {dataset!r} normalises {len(recipe['mean'])} channels, the images "
                        f"have {channels}; fix extract/recipes.py")
    return recipe


def resolve(options: dict, recipe: dict, base: dict | None = None) -> dict:
    """Fill every option left at None from `base` (a checkpoint's config) or else the recipe.

    Args:
        options: the command's options; None means "not given".
        recipe: from `recipe_for`.
        base: values that win over the recipe (used by --dump-only), or None.
    Returns:
        A new dict with no None left where the recipe or base has a value.
    """
    base = base or {}
    defaults = dict(recipe)
    defaults.update(recipe.get("loss_overrides", {}))
    out = {}
    for key, value in options.items():
        if value is None:
            value = base.get(key, defaults.get(key))
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
