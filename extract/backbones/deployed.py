"""Load the deployable model a stage-two run writes (`runs/<dataset>/stage2/<run>/model.pt`).

    from glag.extract.backbones import load_deployed
    model = load_deployed("runs/cifar10-jpeg/stage2/glag/model.pt")
    logits = model(images)          # images (B, Cin, H, W) float in [0, 1], H = W = model.image_size

The file (written by classify/deploy.py) names the backbone, its input and preprocessing, and
holds the stage-one backbone's tensors with the stage-two head as `head.weight` / `head.bias`.
It loads with `weights_only=True`: nothing in it is pickled code.
"""
import torch
from torch import Tensor, nn

from glag.data.deployed import FORMAT
from glag.data.errors import GlagError
from glag.data.tukey import tukey_transform

from .classifier import Classifier
from .registry import BACKBONES, build_backbone, is_backbone

SPACES = ("raw", "tukey")


class DeployedModel(nn.Module):
    """Normalise, backbone, (Tukey transform,) stage-two linear head.

    Args:
        classifier: Classifier whose head is the stage-two head.
        mean, std: per-channel normalisation of stage one (Cin values each).
        space: "raw" (the head reads backbone features) or "tukey" (it reads their Tukey transform).
        lam: Tukey lambda for space "tukey".
        normalise: False when the caller's images are already normalised like stage one's.
    """

    def __init__(self, classifier: Classifier, mean, std, space: str = "raw", lam: float = 1.0,
                 normalise: bool = True):
        super().__init__()
        self.classifier, self.space, self.lam, self.normalise = classifier, space, float(lam), normalise
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def features(self, x: Tensor) -> Tensor:     # (B, Cin, H, W) -> (B, D), post-ReLU as in the bank
        if self.normalise:
            x = (x - self.mean) / self.std
        return self.classifier.features(x)

    def forward(self, x: Tensor) -> Tensor:      # (B, Cin, H, W) -> (B, C)
        f = self.features(x)
        if self.space == "tukey":
            f = tukey_transform(f, self.lam)       # the head was trained on Tukey-transformed features
        return self.classifier.head(f)


def _read(path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GlagError(f"{path}: no such file; model.pt is in a stage-two run folder") from None
    except Exception as e:  # a junk file raises almost anything (UnpicklingError, RuntimeError, EOFError...)
        raise GlagError(f"{path}: not a loadable torch file ({type(e).__name__}); "
                        "pass the model.pt of a stage-two run") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise GlagError(f"{path}: not a {FORMAT} file (a stage-one checkpoint or an older model.pt?); "
                        "rerun `glag-classify run` to write one")
    return obj


def load_deployed(path, map_location="cpu", normalise: bool = True) -> DeployedModel:
    """Rebuild the deployed network of `path` in eval mode.

    Args:
        path: a stage-two run's model.pt.
        map_location: device for the weights.
        normalise: the model normalises its input with stage one's mean/std (images in [0, 1]);
            False: the caller passes images normalised already.
    Returns:
        DeployedModel mapping (B, Cin, H, W) to logits (B, C); `.class_names`, `.preprocess`
        (mean, std, crop, decode_size) and `.image_size` describe its input and output.
    Raises:
        GlagError: unreadable file, another format, unknown backbone or head, tensors that do not fit.
    """
    obj = _read(path)
    head = obj["head"]
    if head.get("kind") != "linear" or head.get("space") not in SPACES:
        raise GlagError(f"{path}: head {head.get('kind')!r} in space {head.get('space')!r} is not known to this "
                        f"version (linear heads in {SPACES}); update GLAG")
    if not is_backbone(obj["backbone"]):   # torchvision:<model> is rebuilt from this torchvision's builders
        raise GlagError(f"{path}: backbone {obj['backbone']!r} is not known here ({sorted(BACKBONES)} or "
                        "torchvision:<model>)")
    net = Classifier(build_backbone(obj["backbone"], obj["in_channels"], obj["image_size"]), obj["num_classes"])
    try:
        net.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise GlagError(f"{path}: its tensors do not fit {obj['backbone']} ({str(e).splitlines()[0]})") from None
    pre = obj["preprocess"]
    model = DeployedModel(net, pre["mean"], pre["std"], head["space"], head.get("tukey_lambda", 1.0), normalise)
    model.class_names, model.preprocess, model.image_size = list(obj["class_names"]), dict(pre), obj["image_size"]
    return model.to(map_location).eval()
