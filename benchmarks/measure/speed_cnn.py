"""What ``bpfree bench-speed --arch cnn`` compares the suite's CNN training step with.

The network is the suite's ``cnn`` (``algorithms/networks.py``, the Mono-Forward paper's Table 2 CNN):
blocks ``Conv(k x k, padding k//2) -> ReLU -> AvgPool2d(pool)`` of ``channels`` maps each, then (BP, FA,
DFA) a head ``flatten -> Linear(classes)``; MF has no head but a projection ``M_i`` (classes x C*H*W) of
every block's flattened output (``readout: flatten``, the table's setting). Two references, as for the MLP
(:mod:`benchmarks.measure.speed`):

* a **plain loop** (:class:`PlainCNN`): the same layers and the same update written directly in PyTorch
  with fused Adam. BP: one backward pass, one optimiser. MF: block by block on the detached block
  input, the block's local cross-entropy, backward and step of that block's own optimiser at once
  (as ``algorithms/mf.py``). DFA (``algorithms/dfa.py``): block inputs detached, the head learns from
  its true gradient on the detached last block output, every block gets ``(e B_i^T)`` reshaped to its
  output map injected at its output (``B_i``: C*H*W x classes), one backward over loss and blocks. FA
  (``algorithms/fa.py``): BP's graph, but every conv and the head send their error down through a fixed
  random kernel/matrix ``B`` of the weight's shape; the plain conv does this with **one**
  ``aten.convolution_backward`` call that has ``B`` in the weight's place (the weight gradient never
  reads the weight, so the call gives B's input gradient and the true weight and bias gradients), where
  the suite's ``FAConv2d`` makes two calls (``torch.nn.grad.conv2d_input`` and ``conv2d_weight``) and a
  bias sum: the same numbers, so suite/plain shows what the two calls cost. Every algorithm is mirrored
  exactly (same losses and gradients); ``tests/test_speed_bench.py`` checks one step of BP, MF, DFA and
  FA against the suite's trainers on copied weights.
* the **floor** (:func:`cnn_floor_step_seconds`): the step's convolutions (:func:`step_convs`: every
  conv's forward and weight gradient; an input gradient for every conv but the first where the error
  travels down through the convs, BP and FA; none for DFA and MF, whose block inputs are detached), its
  matrix products (:func:`cnn_step_gemms`: head or projections, DFA's injected errors) and one fused Adam
  step over the same parameter count, each timed alone with ``torch.utils.benchmark`` on random data,
  summed. A conv's backward halves are timed as ``torch.ops.aten.convolution_backward`` with output
  mask ``(True, False, False)`` (input gradient) and ``(False, True, True)`` (weight and bias
  gradients), the kernels autograd's conv backward calls; autograd asks for all three in one call,
  which can share some reordering, so the floor's two separate calls are not cheaper than the step's.
  ReLU, pooling, the losses and the casts are left out: suite/floor is what they, autograd and Python
  cost. ``dtype`` and ``channels_last`` give the floor of the ``--precision bf16`` and
  ``--channels-last`` variants (their convs and products in bfloat16 / NHWC; Adam stays float32).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .speed import _FALinear, _adam, _seconds, adam_seconds, gemm_seconds

CNN_ALGORITHMS = ("bp", "mf", "dfa", "fa")


def feature_shapes(input_shape: tuple[int, ...], channels: list[int], pool: int = 2) -> list[tuple[int, int, int]]:
    """Every block's output shape ``(C, H, W)``: a padded conv keeps the side, AvgPool2d floors it."""
    _, h, w = input_shape
    shapes = []
    for c in channels:
        if pool > 1:
            h, w = h // pool, w // pool
        shapes.append((c, h, w))
    return shapes


def _random_like(weight: torch.Tensor) -> torch.Tensor:
    feedback = torch.empty_like(weight)
    nn.init.kaiming_uniform_(feedback, a=math.sqrt(5))  # drawn like the weight (algorithms/fa.py)
    return feedback


class _FAConv(torch.autograd.Function):
    """conv2d whose input gradient goes through a fixed kernel B: one convolution_backward call."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, padding):
        ctx.save_for_backward(x, feedback)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, g):
        x, feedback = ctx.saved_tensors
        p = ctx.padding
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g, x.to(g.dtype), feedback.to(g.dtype), [feedback.shape[0]], [1, 1], [p, p], [1, 1], False, [0, 0], 1,
            [ctx.needs_input_grad[0], True, True])
        return gx, gw, gb, None, None


class PlainCNN:
    """One update of ``algorithm`` on the suite's ``cnn``, written directly; ``step(x, y)`` does it.

    ``convs``, ``head`` (None for MF), ``projections`` (MF), ``feedback`` (FA: one per conv, then the
    head's; DFA: one per block) are plain attributes, so a test can copy a suite trainer's weights in.
    """

    def __init__(self, algorithm: str, input_shape: tuple[int, ...], channels: list[int], classes: int, device,
                 kernel_size: int = 3, pool: int = 2, channels_last: bool = False):
        if algorithm not in CNN_ALGORITHMS:
            raise ValueError(f"no plain cnn loop for {algorithm!r}; choose one of: {', '.join(CNN_ALGORITHMS)}")
        self.algorithm, self.classes, self.pool, self.padding = algorithm, classes, pool, kernel_size // 2
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        c_in, self.convs = input_shape[0], []
        for c_out in channels:
            self.convs.append(nn.Conv2d(c_in, c_out, kernel_size, padding=self.padding).to(device, memory_format=fmt))
            c_in = c_out
        flat = [math.prod(s) for s in feature_shapes(input_shape, channels, pool)]
        self.head, self.projections, self.feedback = None, [], []
        if algorithm == "mf":
            for f in flat:
                m = torch.empty(classes, f, device=device)
                nn.init.kaiming_uniform_(m, a=math.sqrt(5))
                self.projections.append(nn.Parameter(m))
            # one optimiser, one step per update, as algorithms/mf.py (the same updates as one per block)
            self.optimizer = _adam([{"params": [*conv.parameters(), m]} for conv, m in zip(self.convs, self.projections)])
        else:
            self.head = nn.Linear(flat[-1], classes).to(device)
            self.optimizer = _adam(self.parameters())
        if algorithm == "fa":
            self.feedback = [_random_like(conv.weight).contiguous(memory_format=fmt) for conv in self.convs]
            self.feedback.append(_random_like(self.head.weight))
        if algorithm == "dfa":
            for f in flat:
                b = torch.empty(f, classes, device=device)
                nn.init.kaiming_uniform_(b, a=math.sqrt(5))
                self.feedback.append(b)
        self.step = getattr(self, f"_{algorithm}")

    def __call__(self, x, y) -> None:
        self.step(x, y)

    def parameters(self) -> list[nn.Parameter]:
        params = [p for conv in self.convs for p in conv.parameters()]
        return params + (list(self.head.parameters()) if self.head is not None else list(self.projections))

    def _block(self, i: int, h: torch.Tensor) -> torch.Tensor:
        conv = self.convs[i]
        if self.algorithm == "fa":
            h = _FAConv.apply(h, conv.weight, conv.bias, self.feedback[i], self.padding)
        else:
            h = conv(h)
        h = F.relu(h)
        return F.avg_pool2d(h, self.pool) if self.pool > 1 else h

    def _bp(self, x, y):
        h = x
        for i in range(len(self.convs)):
            h = self._block(i, h)
        loss = F.cross_entropy(self.head(h.flatten(1)), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def _fa(self, x, y):
        h = x
        for i in range(len(self.convs)):
            h = self._block(i, h)
        logits = _FALinear.apply(h.flatten(1), self.head.weight, self.head.bias, self.feedback[-1])
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def _dfa(self, x, y):
        h, hidden = x, []
        for i in range(len(self.convs)):
            h = self._block(i, h.detach())
            hidden.append(h)
        logits = self.head(h.detach().flatten(1))
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            e = (logits.softmax(1) - F.one_hot(y, self.classes).to(logits.dtype)) / len(y)
            injected = [(e @ b.T).view_as(a) for a, b in zip(hidden, self.feedback)]
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward([loss, *hidden], [None, *injected])
        self.optimizer.step()

    def _mf(self, x, y):
        h = x
        self.optimizer.zero_grad(set_to_none=True)
        for i, m in enumerate(self.projections):
            h = self._block(i, h.detach())
            F.cross_entropy(F.linear(h.flatten(1), m), y).backward()
        self.optimizer.step()


class ConvOp(NamedTuple):
    """One convolution kernel of a step: ``kind`` forward, input_grad or weight_grad (with the bias's)."""

    kind: str
    layer: int  # 0-based conv index
    batch: int
    c_in: int
    c_out: int
    height: int  # the conv's input (= output) side
    width: int
    kernel: int


def step_convs(algorithm: str, b: int, input_shape: tuple[int, ...], channels: list[int], kernel_size: int = 3,
               pool: int = 2) -> list[ConvOp]:
    """The convolutions of one update of ``algorithm`` on a batch of ``b``: forward and weight gradient
    of every conv; the input gradient of every conv but the first where the error travels down through
    the convs (BP through W, FA through its fixed B: the same cost); none for DFA and MF."""
    if algorithm not in CNN_ALGORITHMS:
        raise ValueError(f"no cnn floor for {algorithm!r}; choose one of: {', '.join(CNN_ALGORITHMS)}")
    c_in, h, w = input_shape
    ops = []
    for i, c_out in enumerate(channels):
        shape = (b, c_in, c_out, h, w, kernel_size)
        ops += [ConvOp("forward", i, *shape), ConvOp("weight_grad", i, *shape)]
        if i > 0 and algorithm in ("bp", "fa"):
            ops.append(ConvOp("input_grad", i, *shape))
        c_in = c_out
        if pool > 1:
            h, w = h // pool, w // pool
    return ops


def cnn_step_gemms(algorithm: str, b: int, input_shape: tuple[int, ...], channels: list[int], classes: int,
                   pool: int = 2) -> list[tuple[int, int, int]]:
    """The matrix products of one update, as ``(m, k, n)``: BP/FA the head (forward, weight gradient, the
    error sent to the last block); DFA the head's forward and weight gradient and every block's injected
    ``e B_i^T``; MF every projection's forward, weight gradient and error back to its block."""
    flat = [math.prod(s) for s in feature_shapes(input_shape, channels, pool)]
    if algorithm in ("bp", "fa"):
        return [(b, flat[-1], classes), (classes, b, flat[-1]), (b, classes, flat[-1])]
    if algorithm == "dfa":
        return [(b, flat[-1], classes), (classes, b, flat[-1])] + [(b, classes, f) for f in flat]
    if algorithm == "mf":
        return [g for f in flat for g in ((b, f, classes), (classes, b, f), (b, classes, f))]
    raise ValueError(f"no cnn floor for {algorithm!r}; choose one of: {', '.join(CNN_ALGORITHMS)}")


def cnn_parameter_count(algorithm: str, input_shape: tuple[int, ...], channels: list[int], classes: int,
                        kernel_size: int = 3, pool: int = 2) -> int:
    sizes = [input_shape[0], *channels]
    convs = sum(a * c * kernel_size ** 2 + c for a, c in zip(sizes[:-1], sizes[1:]))
    flat = [math.prod(s) for s in feature_shapes(input_shape, channels, pool)]
    if algorithm == "mf":
        return convs + classes * sum(flat)
    return convs + flat[-1] * classes + classes


def conv_seconds(op: ConvOp, device, dtype=torch.float32, channels_last: bool = False,
                 min_run_time: float = 0.2) -> float:
    """One convolution kernel alone: F.conv2d, or aten.convolution_backward with one half's mask."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    make = lambda *s: torch.randn(*s, device=device, dtype=dtype)  # noqa: E731
    x = make(op.batch, op.c_in, op.height, op.width).contiguous(memory_format=fmt)
    w = make(op.c_out, op.c_in, op.kernel, op.kernel).contiguous(memory_format=fmt)
    g = make(op.batch, op.c_out, op.height, op.width).contiguous(memory_format=fmt)
    p = op.kernel // 2
    env = {"torch": torch, "F": F, "x": x, "w": w, "bias": make(op.c_out), "g": g, "p": p, "c": op.c_out}
    if op.kind == "forward":
        return _seconds("F.conv2d(x, w, bias, padding=p)", env, min_run_time)
    mask = "[True, False, False]" if op.kind == "input_grad" else "[False, True, True]"
    return _seconds(f"torch.ops.aten.convolution_backward(g, x, w, [c], [1, 1], [p, p], [1, 1], False, [0, 0], 1, "
                    f"{mask})", env, min_run_time)


def cnn_floor_step_seconds(algorithm: str, b: int, input_shape: tuple[int, ...], channels: list[int], classes: int,
                           device, kernel_size: int = 3, pool: int = 2, dtype=torch.float32,
                           channels_last: bool = False, min_run_time: float = 0.2) -> dict:
    """The step's convolutions, matrix products and one fused Adam step, each timed alone, summed."""
    convs = [{"op": f"conv{op.layer + 1} {op.kind}", "s": conv_seconds(op, device, dtype, channels_last, min_run_time)}
             for op in step_convs(algorithm, b, input_shape, channels, kernel_size, pool)]
    gemms = gemm_seconds(cnn_step_gemms(algorithm, b, input_shape, channels, classes, pool), device, dtype,
                         min_run_time)
    adam = adam_seconds(cnn_parameter_count(algorithm, input_shape, channels, classes, kernel_size, pool), device,
                        min_run_time)
    conv_s = sum(c["s"] for c in convs)
    return {"conv_s": conv_s, "gemm_s": gemms, "adam_s": adam, "step_s": conv_s + gemms + adam, "convs": convs}
