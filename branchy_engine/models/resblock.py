"""The ResNet-110 residual block of the BranchyNet authors, with its zero-padded shortcut."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm2d with the original's settings: Chainer eps 2e-5, running-average decay 0.9."""
    return nn.BatchNorm2d(channels, eps=2e-5, momentum=0.1)


class ResBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN -> + shortcut(x) -> ReLU.

    [B, in_channels, H, W] -> [B, out_channels, ceil(H / stride), ceil(W / stride)].
    The shortcut has no parameters: zero channels in front of x, then x[:, :, ::stride, ::stride].
    Its forward uses only its four submodules and ReLU, so an exporter can rebuild it from them.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f"the zero-padded shortcut can only add channels: in_channels {in_channels} > "
                f"out_channels {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.bn1 = batch_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.bn2 = batch_norm(out_channels)

    def shortcut(self, x: Tensor) -> Tensor:
        """[B, in_channels, H, W] -> [B, out_channels, ceil(H / stride), ceil(W / stride)]."""
        # Subsampling before padding gives the same tensor as the original's pad-then-subsample,
        # with a smaller zero block.
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        if extra:
            x = torch.cat([x.new_zeros(x.shape[0], extra, *x.shape[2:]), x], 1)
        return x

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))
