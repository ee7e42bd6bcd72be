"""N identically shaped stage-one models as ONE network: grouped convolutions, wide BatchNorm, a batched head.

ResNet-32 at batch 128 leaves an H100 bound by kernel launches (docs/stage-one.md, GPU check), so N
runs side by side mostly add launches. Grouped, the N runs cost one launch per layer:

    Conv2d(Cin, Cout, groups=g)  ->  Conv2d(N Cin, N Cout, groups=N g), weights concatenated on dim 0
    BatchNorm2d(C)               ->  BatchNorm2d(N C), weights, biases and running stats concatenated
    Linear(D, C) head            ->  GroupedLinear: weight (N C, D), bias (N C), one batched matmul

Every op is per channel (convolution groups never mix runs, BatchNorm normalises each channel alone,
ReLU and pooling are elementwise or per channel), so run n only ever sees its own channels
n Cin .. (n+1) Cin - 1 of the input: the grouped network computes exactly the N separate forwards,
up to the float rounding of a different convolution algorithm. Only layers known to be per channel
are accepted (GROUPERS, PER_CHANNEL); anything else is refused rather than silently mixed. The
option-A shortcut of the CIFAR ResNet zero-pads channels, which must happen per run
(GroupedBasicBlock). torch.func.vmap over stacked weights was the other candidate (with torch
2.14 it does update stacked BatchNorm statistics in place); it lowers the convolutions to grouped
ones as well, but pays its dispatch on every op and was the slower of the two on the CPU
(bench/bench_group.py, docs/stage-one.md); the explicit network is also what torch.compile and
CUDA graphs see as one plain module.

Parameter names are those of `Classifier`, in the same order, so `split` gives each run a state
dict that loads into its own Classifier, and optimizer states split the same way.
"""
import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

from glag.data.errors import GlagError

from .backbones.classifier import Classifier
from .backbones.resnet_cifar import BasicBlock, CifarResNet
from .backbones.resnet_imagenet import ResNetTrunk

# Modules whose own forward only applies their children plus per-channel / elementwise ops (adds,
# ReLU, pooling, flatten after a global pool): they stay as they are once their children are grouped.
PER_CHANNEL = (nn.Sequential, nn.ReLU, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
               CifarResNet, ResNetTrunk, tv_resnet.BasicBlock, tv_resnet.Bottleneck)


class GroupedBasicBlock(BasicBlock):
    """The CIFAR BasicBlock on N runs' channels: its option-A shortcut zero-pads each run's channels."""

    n: int = 1

    def shortcut(self, x: Tensor) -> Tensor:                   # (B, N c_in, H, W)
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if not self.pad:
            return x
        B, C, H, W = x.shape
        # one pad over the flat channels would put all zeros at the ends, shifting run 1's channels
        # into run 0's slots; padded per run, each run's block is exactly its own
        x = x.reshape(B, self.n, C // self.n, H, W)
        x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))   # (B, N, c_out, H, W)
        return x.reshape(B, -1, H, W).contiguous(memory_format=torch.channels_last)


class GroupedLinear(nn.Module):
    """N linear heads in one batched matmul. (N, B, D) -> (N, B, C).

    weight (N C, D) and bias (N C) keep nn.Linear's names; run n owns rows n C .. (n+1) C - 1.
    """

    def __init__(self, heads: list):
        super().__init__()
        self.n, self.out_features = len(heads), heads[0].out_features
        self.weight = nn.Parameter(torch.cat([h.weight.detach() for h in heads]).clone())
        self.bias = nn.Parameter(torch.cat([h.bias.detach() for h in heads]).clone())

    def forward(self, f: Tensor) -> Tensor:                    # (N, B, D)
        W = self.weight.view(self.n, self.out_features, -1)     # (N, C, D)
        b = self.bias.view(self.n, 1, self.out_features)        # (N, 1, C)
        return torch.baddbmm(b, f, W.transpose(1, 2))           # (N, B, C)


def _group_conv(convs: list) -> nn.Conv2d:
    c, n, w = convs[0], len(convs), convs[0].weight
    out = nn.Conv2d(n * c.in_channels, n * c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation,
                    n * c.groups, c.bias is not None, c.padding_mode, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(torch.cat([m.weight for m in convs]))                  # (N Cout, Cin / g, k, k)
        if c.bias is not None:
            out.bias.copy_(torch.cat([m.bias for m in convs]))
    return out


def _group_bn(bns: list) -> nn.BatchNorm2d:
    b, n = bns[0], len(bns)
    like = [t for t in (*b.parameters(), *b.buffers()) if t.is_floating_point()]
    out = nn.BatchNorm2d(n * b.num_features, b.eps, b.momentum, b.affine, b.track_running_stats,
                         **(dict(device=like[0].device, dtype=like[0].dtype) if like else {}))
    with torch.no_grad():
        for name, value in list(out.named_parameters(recurse=False)) + list(out.named_buffers(recurse=False)):
            parts = [getattr(m, name) for m in bns]
            # num_batches_tracked is a count, the same for runs stepped together
            value.copy_(parts[0] if value.ndim == 0 else torch.cat(parts))
    return out


GROUPERS = {nn.Conv2d: _group_conv, nn.BatchNorm2d: _group_bn}     # layers rebuilt N times wider


def group_backbone(backbones: list) -> nn.Module:
    """One backbone computing N: input (B, N Cin, H, W) -> (B, N D) features, run n's in block n."""
    net, n = copy.deepcopy(backbones[0]), len(backbones)
    for name, module in list(net.named_modules()):
        kind = type(module)                 # exact types: a subclass may have its own forward
        if kind in GROUPERS:
            parent, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent), attr, GROUPERS[kind]([b.get_submodule(name) for b in backbones]))
        elif kind is BasicBlock:
            module.__class__ = GroupedBasicBlock    # same children and forward; only the shortcut knows the runs
            module.n = n
        elif kind not in PER_CHANNEL:
            raise GlagError(f"backbone layer {name or '(root)'} is a {kind.__name__}, which the grouped runs do "
                            "not know to be per channel; train these runs one at a time with glag-extract")
    return net


class GroupedClassifier(nn.Module):
    """N Classifiers with identical shapes as one network.

    Args:
        models: N Classifiers (same backbone, same C), on one device.
    Forward: x (B, N Cin, H, W), the N runs' batches concatenated on channels -> logits (N, B, C).
    """

    def __init__(self, models: list):
        super().__init__()
        check_same_shapes(models)
        self.n, self.feature_dim, self.num_classes = len(models), models[0].feature_dim, models[0].num_classes
        self.backbone = group_backbone([m.backbone for m in models])
        self.head = GroupedLinear([m.head for m in models])

    def features(self, x: Tensor) -> Tensor:                   # (B, N Cin, H, W) -> (N, B, D)
        f = self.backbone(x)                                   # (B, N D)
        return f.view(f.shape[0], self.n, self.feature_dim).transpose(0, 1)

    def forward(self, x: Tensor) -> Tensor:                    # (B, N Cin, H, W) -> (N, B, C)
        return self.head(self.features(x))


def check_same_shapes(models: list) -> None:
    """Refuse models that cannot share one network (different backbones, widths or classes)."""
    if not models or not all(isinstance(m, Classifier) for m in models):
        raise GlagError("a group needs one or more Classifier models")
    first = {k: tuple(v.shape) for k, v in models[0].state_dict().items()}
    for i, m in enumerate(models[1:], 1):
        if {k: tuple(v.shape) for k, v in m.state_dict().items()} != first:
            raise GlagError(f"run {i} has another backbone or class count than run 0; "
                            "run them in separate groups")


def split_tensor(t: Tensor, n: int) -> list:
    """A grouped tensor's N per-run parts (copies): dim 0 holds the runs' blocks; 0-d values are shared."""
    if t.ndim == 0:
        return [t.clone() for _ in range(n)]
    return [p.clone() for p in t.view(n, t.shape[0] // n, *t.shape[1:]).unbind(0)]


def split(grouped: GroupedClassifier) -> list:
    """N state dicts, one per run, each loadable into that run's own Classifier."""
    out = [{} for _ in range(grouped.n)]
    for key, value in grouped.state_dict().items():
        for state, part in zip(out, split_tensor(value.detach(), grouped.n)):
            state[key] = part
    return out


def split_optimizer_state(state: dict, n: int) -> list:
    """An optimizer state dict of the grouped parameters -> N dicts, one per run's own optimizer.

    Valid for optimizers whose state is elementwise per parameter (SGD's momentum buffer): the runs'
    parameters are disjoint row blocks, so each block of the state belongs to one run.
    """
    per_run = [{"state": {}, "param_groups": copy.deepcopy(state["param_groups"])} for _ in range(n)]
    for index, entries in state["state"].items():
        for key, value in entries.items():
            parts = split_tensor(value, n) if isinstance(value, Tensor) else [value] * n
            for run, part in zip(per_run, parts):
                run["state"].setdefault(index, {})[key] = part
    return per_run


def merge_optimizer_states(states: list) -> dict:
    """The inverse of `split_optimizer_state`: N runs' optimizer states -> the grouped optimizer's."""
    merged = {"state": {}, "param_groups": copy.deepcopy(states[0]["param_groups"])}
    for index, entries in states[0]["state"].items():
        merged["state"][index] = {
            key: torch.cat([s["state"][index][key] for s in states]) if isinstance(value, Tensor) and value.ndim
            else value for key, value in entries.items()}
    return merged
