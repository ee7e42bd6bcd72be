"""The deployable `model.pt` of a run: stage one's backbone with this run's head, self-describing.

classify never builds a backbone (that needs glag.extract.backbones, and through it torchvision);
it copies the backbone's tensors out of stage one's checkpoint and writes beside them what
`glag.extract.backbones.load_deployed` needs to rebuild the network on any machine:

    from glag.extract.backbones import load_deployed
    model = load_deployed("runs/<dataset>/stage2/<run>/model.pt")   # (B, Cin, H, W) in [0, 1] -> (B, C)

The file holds only tensors, strings, numbers and plain containers, so it loads with
`torch.load(..., weights_only=True)`. Its keys are listed in FIELDS; docs/stage-two.md explains them.
"""
import json
from pathlib import Path

import torch

from glag.data.deployed import FORMAT, STAGE_ONE_FORMAT
from glag.data.provenance import code_version, config_json

WRAPPERS = ("module.", "_orig_mod.")         # prefixes DDP and torch.compile add to parameter names
HEAD_KEYS = ("head.weight", "head.bias")     # glag.extract.backbones.Classifier's linear head
FIELDS = ("format", "backbone", "in_channels", "image_size", "num_classes", "feature_dim", "preprocess",
          "head", "class_names", "state_dict", "config", "upstream", "code_version")


def find_checkpoint(bank) -> tuple[Path | None, list]:
    """Stage one's checkpoint for `bank`, and the places looked at.

    Order: the bank config's `checkpoint` key (as given, then relative to the bank's folder);
    glag-extract's file beside the bank (bank.h5 -> bank.ckpt.pt); the same name beside the
    path the bank was first written to (config `out`), for a bank copied elsewhere.
    """
    cfg, seen = bank.config, []
    if cfg.get("checkpoint"):
        seen += [Path(cfg["checkpoint"]), bank.path.parent / cfg["checkpoint"]]
    seen.append(bank.path.with_name(bank.path.stem + ".ckpt.pt"))
    if cfg.get("out"):
        out = Path(cfg["out"])
        seen.append(out.with_name(out.stem + ".ckpt.pt"))
    seen = list(dict.fromkeys(seen))
    return next((p for p in seen if p.is_file()), None), seen


def _unwrap(key: str) -> str:
    """A parameter name without wrapper prefixes, in any nesting ("_orig_mod.module.head.weight")."""
    while key.startswith(WRAPPERS):
        key = key[len(next(p for p in WRAPPERS if key.startswith(p))):]
    return key


def read_stage_one(path: Path) -> tuple[dict, dict]:
    """(state dict with wrapper prefixes removed, stage-one config) of a checkpoint.

    Accepts glag-extract's checkpoint ({"format", "config" (JSON), "model": state dict}),
    {"state_dict": ...} and a plain state dict (then the config is empty).
    Raises ValueError with the reason when the file is not one of these.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a junk file raises almost anything (UnpicklingError, RuntimeError, EOFError...)
        raise ValueError(f"{path} is not a readable torch checkpoint ({type(e).__name__})") from None
    config = {}
    if isinstance(obj, dict) and obj.get("format") == STAGE_ONE_FORMAT:
        config = json.loads(obj["config"]) if isinstance(obj.get("config"), str) else {}
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    return {_unwrap(k): v for k, v in obj.items()}, config


def _matches_bank(state: dict, bank) -> str | None:
    """Why the checkpoint's head is not the bank's stage-one head (so not the model that dumped it), or None."""
    missing = [k for k in HEAD_KEYS if k not in state]
    if missing:
        return f"it has no {missing} (not an glag.extract.backbones.Classifier checkpoint)"
    W1, b1 = (torch.from_numpy(t) for t in bank.head)
    W, b = state["head.weight"].float(), state["head.bias"].float()
    if W.shape != W1.shape or not (torch.allclose(W, W1, atol=1e-5) and torch.allclose(b, b1, atol=1e-5)):
        return ("its stage-one head differs from the bank's, so it is not the model the bank was dumped from "
                "(trained again since?); dump the bank again (`glag-extract --dump-only`) or pass --no-deploy")
    return None


def architecture(bank, stage_one_cfg: dict) -> dict | None:
    """How to rebuild the network: backbone name, input and preprocessing; None when not recorded.

    The checkpoint's own config wins; the bank's config (the same stage-one cfg) fills gaps.
    """
    cfg = dict(bank.config, **stage_one_cfg)
    backbone = cfg.get("backbone") or bank.backbone
    if not backbone or backbone == "none" or any(cfg.get(k) is None for k in ("channels", "image_size")):
        return None
    size = int(cfg["image_size"])
    preprocess = {"mean": [float(v) for v in cfg.get("mean", [0.0] * int(cfg["channels"]))],
                  "std": [float(v) for v in cfg.get("std", [1.0] * int(cfg["channels"]))],
                  "crop": str(cfg.get("crop", "pad")), "decode_size": int(cfg.get("decode_size") or size)}
    return {"backbone": str(backbone), "in_channels": int(cfg["channels"]), "image_size": size,
            "preprocess": preprocess}


def build_deployed(bank, W: torch.Tensor, b: torch.Tensor, cfg: dict, stage_two: dict) -> tuple[dict | None, dict]:
    """The model.pt dict (or None) and a status {"checkpoint", "reason"} for metrics.json.

    Args:
        bank: glag.data.bank.Bank of the run.
        W, b: (C, D), (C,) linear equivalent of the trained head in the head's feature space.
        cfg: the run's resolved config (space, tukey_lambda, method, head).
        stage_two: the run's config as written to config.json (stored under "config").
    """
    path, seen = find_checkpoint(bank)
    if path is None:
        return None, {"checkpoint": None, "reason": "no stage-one checkpoint found (looked for "
                      f"{', '.join(map(str, seen))}); glag-extract writes bank.ckpt.pt beside the bank"}
    try:
        state, stage_one_cfg = read_stage_one(path)
    except ValueError as e:
        return None, {"checkpoint": str(path), "reason": str(e)}
    why = _matches_bank(state, bank)
    arch = architecture(bank, stage_one_cfg)
    if why is None and arch is None:
        why = "neither it nor the bank's config names the backbone, channels and image size"
    if why is not None:
        return None, {"checkpoint": str(path), "reason": f"{path}: {why}"}
    tensors = {k: v for k, v in state.items() if k not in HEAD_KEYS}
    tensors["head.weight"] = W.detach().cpu().to(state["head.weight"].dtype).contiguous()
    tensors["head.bias"] = b.detach().cpu().to(state["head.bias"].dtype).contiguous()
    head = {"kind": "linear", "space": cfg["space"], "tukey_lambda": float(cfg["tukey_lambda"]),
            "method": cfg["method"], "trained_head": cfg["head"]}
    model = dict(arch, format=FORMAT, num_classes=int(bank.num_classes), feature_dim=int(bank.feature_dim),
                 head=head, class_names=list(bank.class_names), state_dict=tensors,
                 config=config_json(stage_two), upstream=config_json(dict(bank.config, **stage_one_cfg)),
                 code_version=code_version())
    return model, {"checkpoint": str(path), "reason": None}
