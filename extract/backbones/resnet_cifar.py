"""Small-image ResNets (He et al. 2016, Sec. 4.2): `resnet32` for CIFAR, `resnet_small` for digits.

Shortcuts are option A (parameter-free: strided identity, zero-padded channels), as in
the CIFAR ResNet-32 of LDAM-DRW that the paper follows, so resnet32 has ~0.46 M parameters.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_backbone


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an option-A shortcut; output is post-ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        # zero channels on both sides keeps the identity centred, as He et al.'s option A
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2)) if self.pad else x

    def forward(self, x: Tensor) -> Tensor:                    # (B, c_in, H, W)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))                  # (B, c_out, H/stride, W/stride)


class CifarResNet(nn.Module):
    """3x3 stem, then one stage per width (stride 1, 2, 2, ...), then global average pooling.

    Args:
        in_channels: image channels Cin.
        widths: channels of each stage; feature_dim = widths[-1].
        blocks: basic blocks per stage.
    """

    def __init__(self, in_channels: int, widths=(16, 32, 64), blocks: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, c_in = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(c_in, width, stride=2 if i > 0 and j == 0 else 1))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.feature_dim = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:                    # (B, Cin, H, W)
        x = self.layers(F.relu(self.bn1(self.conv1(x))))       # (B, D, H/4, W/4), >= 0
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)   # (B, D)


@register_backbone("resnet32")
def resnet32(in_channels: int, image_size: int) -> CifarResNet:
    """CIFAR ResNet-32: 3 stages x 5 blocks, 16/32/64 channels, 64-d features."""
    return CifarResNet(in_channels, widths=(16, 32, 64), blocks=5)


@register_backbone("resnet_small")
def resnet_small(in_channels: int, image_size: int) -> CifarResNet:
    """A ResNet-8 for 8x8 / 28x28 gray images: 3 stages x 1 block, 16/32/64 channels, 64-d features."""
    return CifarResNet(in_channels, widths=(16, 32, 64), blocks=1)
