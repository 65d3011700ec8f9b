"""LocalMixer (Ren, Kornblith, Liao, Hinton 2023): a small MLP-Mixer made for local learning.

The image is cut into ``patches`` x ``patches`` square patches; every block keeps a map of shape
(P patches, C channels), the C channels split into ``groups`` groups of C/G. Blocks:

* block 1 (patch embedding): per patch, ``Linear(pixels -> C)`` + LayerNorm + ReLU, then a *group
  linear* (one C/G x C/G matrix per group, nothing mixed between groups) + per-group LayerNorm + ReLU;
* blocks 2.. (mixer blocks): token mixing (per channel, ``Linear(P -> P)`` across patches) + LayerNorm
  over channels + ReLU; channel mixing (per patch, ``Linear(C -> C)``) + LayerNorm + ReLU; group linear
  + per-group LayerNorm; plus the block's input (residual); ReLU.

Every linear op is followed by its normalisation, and forward-gradient learning perturbs the
normalised output (before the ReLU): each such pair is a *site* (``fg_sites()``), with a ``route``
that says which of the block's local losses (one per patch and group, shape (N, P, G)) depend on a
site's output position. A group-linear or channel-mixing output at patch p, group g reaches only the
loss of (p, g) (ReLU and group linear keep groups apart); a token-mixing output at patch p reaches
every group's loss of patch p (channel mixing mixes the groups). ``algorithms/fg.py`` uses the routes
to pair every perturbation with the losses it can change.

Simplifications against the paper's network: no downsampling or channel doubling between stages, no
LayerNorm at the start of a block, LayerNorms without learned affine parameters. The head, for
algorithms that use one (BP), averages the last block's map over patches, normalises it and maps it
linearly to the classes, as the paper's classifier reads out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .networks import LayerFactory, _whole
from .typed_config import check
from .registry import ARCHITECTURES


def patchify(x: torch.Tensor, per_side: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, P, C * (H/per_side) * (W/per_side)), patches in row-major order."""
    n, c, h, w = x.shape
    ph, pw = h // per_side, w // per_side
    x = x.reshape(n, c, per_side, ph, per_side, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, per_side * per_side, c * ph * pw)


class Norm(nn.Module):
    """LayerNorm over the last dimension, or over each of ``groups`` equal slices of it; no affine."""

    def __init__(self, groups: int = 1):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(*shape[:-1], self.groups, shape[-1] // self.groups)
        return F.layer_norm(x, x.shape[-1:]).reshape(shape)


class GroupLinear(nn.Module):
    """A block-diagonal linear map: group g of the channels is mapped by its own C/G x C/G matrix."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.groups, size = groups, channels // groups
        bound = 1 / math.sqrt(size)  # nn.Linear's default initialisation, per group
        self.weight = nn.Parameter(torch.empty(groups, size, size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, size).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(*shape[:-1], self.groups, shape[-1] // self.groups)
        return (torch.einsum("...gi,goi->...go", x, self.weight) + self.bias).reshape(shape)


class TokenMixing(nn.Module):
    """Per channel, a linear map across patches: (N, P, C) -> (N, P, C)."""

    def __init__(self, layers: LayerFactory, patches: int):
        super().__init__()
        self.linear = layers.linear(patches, patches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.transpose(1, 2)).transpose(1, 2)


def route_group(channels: int, groups: int):
    """Loss tangents (N, P, G) -> (N, P, C): each channel paired with its own group's loss."""
    return lambda d: d.repeat_interleave(channels // groups, dim=2)


def route_patch(d: torch.Tensor) -> torch.Tensor:
    """Loss tangents (N, P, G) -> (N, P, 1): each position paired with every group's loss of its patch."""
    return d.sum(2, keepdim=True)


class PatchEmbedding(nn.Module):
    def __init__(self, layers: LayerFactory, per_side: int, pixels: int, channels: int, groups: int):
        super().__init__()
        self.per_side, self.groups = per_side, groups
        self.embed = nn.Sequential(layers.linear(pixels, channels), Norm())
        self.group = nn.Sequential(GroupLinear(channels, groups), Norm(groups))
        self._route = route_group(channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.group(torch.relu(self.embed(patchify(x, self.per_side)))))

    def fg_sites(self):
        return [(self.embed, self._route), (self.group, self._route)]


class MixerBlock(nn.Module):
    def __init__(self, layers: LayerFactory, patches: int, channels: int, groups: int):
        super().__init__()
        self.groups = groups
        self.token = nn.Sequential(TokenMixing(layers, patches), Norm())
        self.channel = nn.Sequential(layers.linear(channels, channels), Norm())
        self.group = nn.Sequential(GroupLinear(channels, groups), Norm(groups))
        self._route = route_group(channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.channel(torch.relu(self.token(x))))
        return torch.relu(self.group(h) + x)

    def fg_sites(self):
        return [(self.token, route_patch), (self.channel, self._route), (self.group, self._route)]


@dataclass
class LocalMixerArgs:
    patches: int = 4  # patches per image side (16 patches), the authors' released code's default
    channels: int = 256  # channels per patch, the released code's default width
    blocks: int = 4  # mixer blocks after the patch embedding
    groups: int = 8  # channel groups, each with its own local losses: 32 channels a group, as the released
    #                  ImageNet setting's 2048 channels in 64 groups

    def validate(self) -> None:
        for name in ("patches", "channels", "blocks", "groups"):
            setattr(self, name, _whole(getattr(self, name), f"localmixer's {name}"))
        check(self.patches >= 1 and self.channels >= 1 and self.groups >= 1 and self.blocks >= 0,
               f"localmixer needs patches, channels, groups >= 1 and blocks >= 0, got {self}")
        check(self.channels % self.groups == 0,
               f"localmixer's channels ({self.channels}) must split into {self.groups} equal groups")


@ARCHITECTURES.register("localmixer")
class LocalMixer:
    """Patch embedding, then ``blocks`` mixer blocks; every block's output is (patches^2, channels)."""

    Args = LocalMixerArgs

    @staticmethod
    def blocks(args: LocalMixerArgs, input_shape: tuple[int, ...], layers: LayerFactory) -> list[nn.Module]:
        check(len(input_shape) == 3, f"localmixer needs image input (C, H, W), got shape {tuple(input_shape)}")
        c, h, w = input_shape
        check(h % args.patches == 0 and w % args.patches == 0,
               f"localmixer's {args.patches} patches a side must divide the {h}x{w} image")
        pixels = c * (h // args.patches) * (w // args.patches)
        p = args.patches ** 2
        return [PatchEmbedding(layers, args.patches, pixels, args.channels, args.groups),
                *(MixerBlock(layers, p, args.channels, args.groups) for _ in range(args.blocks))]

    @staticmethod
    def head(feature_shape: tuple[int, ...], num_classes: int, layers: LayerFactory) -> nn.Module:
        """Mean over patches, LayerNorm, linear to the classes."""
        return nn.Sequential(PatchMean(), Norm(), layers.linear(feature_shape[-1], num_classes))


class PatchMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)
