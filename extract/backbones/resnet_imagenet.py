"""ImageNet-style ResNets from torchvision's blocks, without the fc layer.

Parameter names match torchvision's, so an ImageNet / SSP checkpoint loads with
`load_pretrained` (its fc.* keys are ignored).
"""
import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .registry import register_backbone


class ResNetTrunk(ResNet):
    """torchvision's ResNet (weights=None, i.e. random init) up to the global average pool.

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage, e.g. [1, 1, 1, 1] for ResNet-10.
        in_channels: image channels Cin; the 7x7 stem is rebuilt when it is not 3.
    """

    def __init__(self, block, layers, in_channels: int = 3):
        super().__init__(block, layers)
        self.feature_dim = self.fc.in_features
        del self.fc  # the class head lives in Classifier
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:                    # (B, Cin, H, W)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # post-ReLU, >= 0
        return torch.flatten(self.avgpool(x), 1)               # (B, D)


@register_backbone("resnet10")
def resnet10(in_channels: int, image_size: int) -> ResNetTrunk:
    """ResNet-10 (1 basic block per stage), 512-d features: the ImageNet-LT baseline of Kang et al."""
    return ResNetTrunk(BasicBlock, [1, 1, 1, 1], in_channels)


@register_backbone("resnet50")
def resnet50(in_channels: int, image_size: int) -> ResNetTrunk:
    """ResNet-50 (bottlenecks 3-4-6-3), 2048-d features."""
    return ResNetTrunk(Bottleneck, [3, 4, 6, 3], in_channels)
