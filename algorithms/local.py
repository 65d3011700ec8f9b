"""A locally connected layer: a convolution whose every output position has its own kernel.

``LocallyConnected2d`` maps an image ``(C_in, H, W)`` to ``(C_out, H_out, W_out)``: output position
``p`` computes ``C_out`` units from the ``C_in x k x k`` input patch under it with weights of its
own (no weight sharing across positions, unlike ``nn.Conv2d``). It is a dense layer whose weight
matrix is zero outside each unit's receptive field, stored without the zeros.

Parameters: ``weight`` of shape ``(P, C_out, C_in*k*k)`` (P = H_out*W_out positions, row-major; a
position's kernel ``weight[p, o]`` is ordered like a flattened ``Conv2d`` kernel: channel, kernel
row, kernel column) and ``bias`` of shape ``(C_out, H_out, W_out)``. Both start like
``nn.Conv2d``'s: uniform in +-1/sqrt(C_in*k*k).

Two ways to compute the same thing, chosen per layer (``dense=None``: automatically):

* ``unfold``: the patches of the padded input, taken as a strided view (no copy), are gathered
  position-major into ``(P, N, C_in*k*k)`` and multiplied by each position's kernels in one batched
  matmul (positions as the batch). Its cost moves ``N*P*C_in*k*k`` numbers, little arithmetic.
* ``dense``: the kernels are scattered into the masked dense matrix ``(C_out*P, C_in*H*W)`` and the
  layer is one ``F.linear``. Its cost is a dense matmul, fast per number but on every zero too.

Measured on one CPU thread (CPU time of forward plus backward, batch 64, 3x32x32 input, 3 channels
out; with / without the input's gradient): kernel 4: unfold 27 / 15 ms, dense 128 / 110 ms; kernel
8: unfold 125 / 70 ms, dense 140 / 117 ms; kernel 16: unfold 508 / 332 ms, dense 146 / 125 ms. The
unfold cost grows with the receptive field, the dense one does not, so ``dense`` is used when a
receptive field covers at least 1/8 of the input (kernel 16 on 32x32, any kernel >= 3 on 8x8) and
the dense matrix has at most 2**25 entries (128 MB in float32); both give the same numbers up to
rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DENSE_MIN_COVERAGE = 1 / 8  # receptive field / input size from which the dense product is used
DENSE_MAX_ENTRIES = 2 ** 25


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``same``: output size ceil(size / stride); an odd total pads one more after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class LocallyConnected2d(nn.Module):
    """Unshared-weight 2-d layer on inputs of shape ``in_shape = (C_in, H, W)`` (a flat
    ``(N, C_in*H*W)`` input is read as that image). ``padding`` is ``"same"`` (H_out =
    ceil(H / stride); for an even kernel the extra row/column of zeros goes after), ``"valid"``
    (none) or a number of zeros on every side. ``dense``: True/False forces the dense/unfold
    product (see the module docstring), None chooses."""

    def __init__(self, in_shape: tuple[int, int, int], out_channels: int, kernel_size: int, stride: int = 1,
                 padding: str | int = "same", bias: bool = True, dense: bool | None = None):
        super().__init__()
        c, h, w = (int(s) for s in in_shape)
        k, s = int(kernel_size), int(stride)
        self.in_shape, self.out_channels, self.kernel_size, self.stride = (c, h, w), int(out_channels), k, s
        if padding == "same":
            (top, bottom), (left, right) = same_padding(h, k, s), same_padding(w, k, s)
        elif padding == "valid":
            top = bottom = left = right = 0
        else:
            top = bottom = left = right = int(padding)
        self.pad = (left, right, top, bottom)  # F.pad's order: last dimension first
        h_out, w_out = (h + top + bottom - k) // s + 1, (w + left + right - k) // s + 1
        if h_out < 1 or w_out < 1:
            raise ValueError(f"kernel {k} does not fit the padded {h}x{w} input")
        self.out_shape = (self.out_channels, h_out, w_out)
        positions, patch = h_out * w_out, c * k * k
        self.weight = nn.Parameter(torch.empty(positions, self.out_channels, patch))
        self.bias = nn.Parameter(torch.empty(self.out_shape)) if bias else None
        self.reset_parameters()
        entries = self.out_channels * positions * c * h * w
        if dense is None:
            dense = patch >= DENSE_MIN_COVERAGE * c * h * w and entries <= DENSE_MAX_ENTRIES
        self.dense = bool(dense)
        if self.dense:
            index, source = self._dense_index()
            self.register_buffer("dense_index", index, persistent=False)
            self.register_buffer("dense_source", source, persistent=False)

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.weight.shape[2])  # nn.Conv2d's default bounds for its fan-in
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    # -- unfold ----------------------------------------------------------------------------------
    def columns(self, x: torch.Tensor) -> torch.Tensor:
        """The input patches, position-major: ``(P, N, C_in*k*k)``."""
        n, k, s = len(x), self.kernel_size, self.stride
        x = x.reshape(n, *self.in_shape)
        if any(self.pad):
            x = F.pad(x, self.pad)
        patches = x.unfold(2, k, s).unfold(3, k, s)  # (N, C, H_out, W_out, k, k), a view
        return patches.permute(2, 3, 0, 1, 4, 5).reshape(self.weight.shape[0], n, -1)

    def local_product(self, cols: torch.Tensor) -> torch.Tensor:
        """``(P, N, K) -> (P, N, C_out)``: each position's patch times its own kernels (FA overrides this)."""
        out = torch.bmm(cols, self.weight.transpose(1, 2))
        if self.bias is not None:
            out = out + self.bias.flatten(1).T.unsqueeze(1)
        return out

    # -- dense -----------------------------------------------------------------------------------
    def _dense_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each kernel entry lands in the flat dense matrix (row o*P + p, column c*H*W + y*W + x),
        and which entries of the flat weight those are (kernel entries over padding are left out)."""
        c, h, w = self.in_shape
        o_n, h_out, w_out = self.out_shape
        k, s = self.kernel_size, self.stride
        left, _, top, _ = self.pad
        p = torch.arange(h_out * w_out)
        i, j = torch.arange(k), torch.arange(k)
        ys = (p // w_out * s - top)[:, None, None, None, None] + i[None, None, None, :, None]  # (P, 1, 1, k, 1)
        xs = (p % w_out * s - left)[:, None, None, None, None] + j[None, None, None, None, :]  # (P, 1, 1, 1, k)
        rows = torch.arange(o_n)[None, :, None, None, None] * len(p) + p[:, None, None, None, None]
        cols = torch.arange(c)[None, None, :, None, None] * (h * w) + ys * w + xs
        shape = (len(p), o_n, c, k, k)  # the weight's layout, unflattened
        valid = ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)).expand(shape).reshape(-1)
        flat = (rows * (c * h * w) + cols).expand(shape).reshape(-1)
        return flat[valid], valid.nonzero().squeeze(1)

    def dense_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` (this layer's layout) as the masked dense matrix ``(C_out*P, C_in*H*W)``."""
        rows, cols = self.out_channels * self.weight.shape[0], math.prod(self.in_shape)
        entries = weight.reshape(-1).index_select(0, self.dense_source)
        flat = weight.new_zeros(rows * cols).scatter(0, self.dense_index, entries)
        return flat.view(rows, cols)

    def dense_product(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in*H*W) -> (N, C_out*P)`` through the masked dense matrix (FA overrides this)."""
        return F.linear(x, self.dense_matrix(self.weight), None if self.bias is None else self.bias.reshape(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if self.dense:
            return self.dense_product(x.reshape(n, -1)).view(n, *self.out_shape)
        out = self.local_product(self.columns(x))  # (P, N, C_out)
        return out.permute(1, 2, 0).reshape(n, *self.out_shape)

    def extra_repr(self) -> str:
        return (f"in_shape={self.in_shape}, out_shape={self.out_shape}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, pad={self.pad}, bias={self.bias is not None}, dense={self.dense}")
