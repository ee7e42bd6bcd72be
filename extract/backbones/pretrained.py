"""Load a local backbone checkpoint (ImageNet, SSP, a previous run) into a backbone."""
import torch
from torch import nn

from glag.data.errors import GlagError

# Wrappers added by DataParallel / DDP and by training code that nests the backbone.
PREFIXES = ("module.", "backbone.")
IGNORED = ("fc.", "head.")  # class heads (torchvision's, our Classifier's); stage one trains its own


def _state_dict(obj, path) -> dict:
    """The tensor dict inside a loaded checkpoint: plain, {"state_dict": ...} or {"model": ...}."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise GlagError(f"{path}: not a state dict (expected a dict of tensors, possibly under "
                        f"'state_dict' or 'model'); pass a backbone checkpoint to --pretrained")
    return obj


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def load_pretrained(model: nn.Module, path) -> tuple[list[str], list[str]]:
    """Copy matching weights from the checkpoint at `path` into `model` (a backbone), non-strictly.

    Args:
        model: the backbone to initialise.
        path: a file saved with torch.save; loaded with weights_only=True onto the CPU.
    Returns:
        (missing, unexpected): model keys the file lacks, file keys the model lacks (fc.*, head.* dropped).
    Raises:
        GlagError: unreadable file, not a state dict, shapes that do not fit, or no key in common.
    """
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise GlagError(f"{path}: no such checkpoint; check --pretrained") from None
    except IsADirectoryError:
        raise GlagError(f"{path}: is a folder, not a checkpoint file; check --pretrained") from None
    except Exception as e:  # torch.load on a junk file raises almost anything (KeyError, UnpicklingError, ...)
        # torch's own text may advise weights_only=False, which runs any code the file holds: never passed on
        why = "it holds Python objects besides tensors, which are never unpickled here" \
            if "weights only" in str(e).lower() or "weights_only" in str(e).lower() else type(e).__name__
        raise GlagError(f"{path}: not a loadable torch checkpoint ({why}); pass a state dict of tensors "
                        f"saved with torch.save") from None
    state = {_strip(k): v for k, v in _state_dict(obj, path).items()}
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED)}
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    if wrong:
        raise GlagError(f"{path}: {len(wrong)} tensor(s) do not fit the backbone, e.g. {wrong[0]}; "
                        f"is it the right --backbone?")
    if not set(state) & set(own):
        raise GlagError(f"{path}: no parameter name matches the backbone (e.g. {next(iter(state))!r}); "
                        f"is it the right --backbone?")
    result = model.load_state_dict(state, strict=False)
    return list(result.missing_keys), list(result.unexpected_keys)
