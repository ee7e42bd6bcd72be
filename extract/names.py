"""Stage one's choices and loss options as plain names, importable without torch.

`--help`, `--version` and a bad option of glag-extract, glag-extract-group and
glag-reproduce are answered from these alone, so they never wait for torch (seconds on a
busy machine). The modules that implement each choice import their name list from here;
the two registries (glag.extract.losses.LOSSES, glag.extract.backbones.BACKBONES) stay the
truth for losses and backbones, and tests/test_startup.py checks that these lists match them.
"""
import click

DEVICES = ("auto", "cpu", "cuda")
AMP = ("auto", "bf16", "fp32")
DECODE = ("auto", "cpu", "gpu")
SAMPLERS = ("instance", "class")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
AUTOAUGMENT = ("none", "cifar10", "imagenet", "svhn")    # torchvision's AutoAugmentPolicy names
BACKBONES = ("resnet10", "resnet32", "resnet50", "resnet_small")
TORCHVISION = "torchvision:"
ALPHA_FORMS = ("convex", "linear", "concave")
LAS_SHAPES = ("concave", "linear", "convex", "exp")

# loss -> {option: (default, help)}, exactly the keyword options of the loss class (its signature).
LOSS_OPTIONS = {
    "balanced_softmax": {},
    "ce": {},
    "focal": {"gamma": (1.0, "Focusing parameter gamma (>= 0); 0 = cross-entropy.")},
    "graloss": {"form": ("convex", f"Shape of the alpha schedule, one of {list(ALPHA_FORMS)} (Eq. 3)."),
                "c": (2.0, "Curvature c of the alpha schedule (> 1); alpha ends at s*(c-1) (Eq. 3)."),
                "s": (1.0, "Scale s of the alpha schedule (Eq. 3); the paper uses 0.5 on iNaturalist.")},
    "las": {"smooth_head": (0.4, "Smoothing of the largest class."),
            "smooth_tail": (0.1, "Smoothing of the rarest class."),
            "shape": ("concave", f"Growth of the smoothing with the class count: one of {list(LAS_SHAPES)}."),
            "power": (3.0, "Exponent of the exp shape.")},
    "ldam": {"max_m": (0.5, "Largest LDAM margin, given to the rarest class."),
             "s": (1.0, "Logit scale of LDAM (Cao et al.'s 30 assumes cosine logits; ours are linear)."),
             "drw_epoch": (-1, "First 0-based epoch of deferred re-weighting; -1 = 4/5 of --epochs."),
             "beta": (0.9999, "Effective-number beta of the deferred re-weighting class weights.")},
    "logit_adjust": {"tau": (0.5, "Logit-adjustment strength tau (Eq. 2); 0 = CE, 1 = balanced softmax.")},
}
LOSS_NAMES = tuple(sorted(LOSS_OPTIONS))


def option_help(loss: str) -> dict:
    """{option: help line} of a loss: the loss class's OPTION_HELP."""
    return {key: text for key, (_, text) in LOSS_OPTIONS[loss].items()}


class BackboneName(click.Choice):
    """click type of --backbone: a registered name, or `torchvision:<model>` checked against torchvision
    (imported only for such a name)."""

    def __init__(self):
        super().__init__(list(BACKBONES) + [f"{TORCHVISION}<model>"])

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.startswith(TORCHVISION):
            from glag.extract.backbones.torchvision_models import check_name
            try:
                check_name(value)
            except Exception as e:   # GlagError -> click's one-line usage error
                self.fail(str(e), param, ctx)
            return value
        return super().convert(value, param, ctx)
