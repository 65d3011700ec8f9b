"""What the speed benchmark (bpfree bench-speed) compares the suite's training step with.

For each algorithm on an MLP (``in_features -> widths -> classes``) two references:

* a **plain loop**: the same work written directly in PyTorch, as a careful user would (one
  ``nn.Sequential``, fused Adam, no suite code), so that suite/plain shows the suite's own overhead;
* the **floor**: the step's matrix products and one fused Adam step over the same parameters, each
  timed in isolation with ``torch.utils.benchmark`` on random data, summed. No step can be cheaper
  than its GEMMs plus its optimiser update, so suite/floor shows what is left for everything else
  (activations, losses, autograd's bookkeeping, Python).

The GEMM lists are the products each algorithm's update needs (``(m, k, n)``: an ``m x k`` times a
``k x n`` matrix) for a batch of ``b``; they are what makes the algorithms' costs differ: BP carries
the error back through every weight, MF only through its 10-row projections, FF runs every layer
three times (positive, negative, neutral for the one-pass head; its first layer's product with the
image once, shared). The plain FF loop is the textbook one, three full passes.

The CNN's references (``--arch cnn``) are in :mod:`benchmarks.measure.speed_cnn`, which shares the
timing helpers here (:func:`gemm_seconds`, :func:`adam_seconds`). :func:`cpu_bf16_support` reads which
native bfloat16 arithmetic the CPU has, for the JSON of ``--precision bf16`` runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PLAIN_ALGORITHMS = ("mf", "bp", "fa", "dfa", "ff")


def _adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3, fused=True)


def _mlp(sizes: list[int]) -> list[nn.Linear]:
    return [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]


class _FALinear(torch.autograd.Function):
    """y = x W^T + b whose input gradient goes through a fixed matrix B instead of W."""

    @staticmethod
    def forward(ctx, x, w, b, feedback):
        ctx.save_for_backward(x, feedback)
        return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, g):
        x, feedback = ctx.saved_tensors
        return (g @ feedback if ctx.needs_input_grad[0] else None), g.T @ x, g.sum(0), None


def plain_step(algorithm: str, in_features: int, widths: list[int], classes: int, device):
    """``step(x, y)`` doing one update of ``algorithm`` the direct way, on ``device``."""
    sizes = [in_features, *widths]
    if algorithm in ("bp", "fa", "dfa"):
        layers = [layer.to(device) for layer in _mlp([*sizes, classes])]
        opt = _adam([p for layer in layers for p in layer.parameters()])
        feedback = [torch.randn_like(layer.weight) / math.sqrt(layer.weight.shape[1]) for layer in layers]
        dfa_feedback = [torch.randn(w, classes, device=device) / math.sqrt(classes) for w in widths]

        def step(x, y):
            h, hidden = x, []
            for i, layer in enumerate(layers):
                if algorithm == "fa":
                    h = _FALinear.apply(h, layer.weight, layer.bias, feedback[i])
                else:
                    h = layer(h.detach() if algorithm == "dfa" else h)
                if i < len(layers) - 1:
                    h = h.relu()
                    hidden.append(h)
            loss = F.cross_entropy(h, y)
            opt.zero_grad(set_to_none=True)
            if algorithm == "dfa":
                with torch.no_grad():
                    e = (h.softmax(1) - F.one_hot(y, classes).to(h.dtype)) / len(y)
                torch.autograd.backward([loss, *hidden], [None, *(e @ b.T for b in dfa_feedback)])
            else:
                loss.backward()
            opt.step()
        return step

    if algorithm == "mf":
        layers = [layer.to(device) for layer in _mlp(sizes)]
        projections = [nn.Parameter(torch.randn(classes, w, device=device) / math.sqrt(w)) for w in widths]
        # one optimiser, one step per update, as algorithms/mf.py (the same updates as one per block)
        opt = _adam([{"params": [*layer.parameters(), m]} for layer, m in zip(layers, projections)])

        def step(x, y):
            h = x
            opt.zero_grad(set_to_none=True)
            for layer, m in zip(layers, projections):
                h = layer(h.detach()).relu()
                F.cross_entropy(F.linear(h, m), y).backward()
            opt.step()
        return step

    if algorithm == "ff":
        layers = [layer.to(device) for layer in _mlp(sizes)]
        head = nn.Linear(sum(widths), classes).to(device)
        opt = _adam([*(p for layer in layers for p in layer.parameters()), *head.parameters()])

        def run(h):
            acts = []
            for layer in layers:
                h = h.detach()
                h = layer(h * (h.pow(2).mean(1, keepdim=True) + 1e-8).rsqrt()).relu()
                acts.append(h)
            return acts

        def embed(x, label):
            return torch.cat([label, x[:, classes:]], 1)

        def step(x, y):
            onehot = F.one_hot(y, classes).to(x.dtype)
            wrong = (y + torch.randint(1, classes, y.shape, device=y.device)) % classes
            pos, neg = run(embed(x, onehot)), run(embed(x, F.one_hot(wrong, classes).to(x.dtype)))
            loss = sum((F.softplus(-(p.pow(2).sum(1) - p.shape[1])) + F.softplus(n.pow(2).sum(1) - n.shape[1])).mean()
                       for p, n in zip(pos, neg))
            with torch.no_grad():
                neutral = torch.cat(run(embed(x, torch.full_like(onehot, 1.0 / classes))), 1)
            loss = loss + F.cross_entropy(head(neutral), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    raise ValueError(f"no plain loop for {algorithm!r}; choose one of: {', '.join(PLAIN_ALGORITHMS)}")


def step_gemms(algorithm: str, b: int, in_features: int, widths: list[int], classes: int
               ) -> list[tuple[int, int, int]]:
    """The matrix products of one update of ``algorithm`` on a batch of ``b``, as ``(m, k, n)``."""
    sizes = [in_features, *widths]
    out: list[tuple[int, int, int]] = []
    if algorithm in ("bp", "fa", "dfa"):
        full = [*sizes, classes]
        for i, (a, c) in enumerate(zip(full[:-1], full[1:])):
            out += [(b, a, c), (c, b, a)]  # forward, weight gradient
            if i > 0:  # the error sent down: through W (BP), B (FA); DFA sends B_i e to each hidden layer
                out.append((b, classes, a) if algorithm == "dfa" else (b, c, a))
        return out
    if algorithm == "mf":
        for a, c in zip(sizes[:-1], sizes[1:]):
            out += [(b, a, c), (b, c, classes), (classes, b, c), (b, classes, c), (c, b, a)]
        return out
    if algorithm == "ff":
        # the first layer's product with the image is shared by the three label sets (algorithms/ff.py),
        # each adding a (b x classes) @ (classes x width) label term; later layers run once per set
        out += [(b, in_features, widths[0]), (widths[0], b, in_features)] + [(b, classes, widths[0])] * 3
        for a, c in zip(sizes[1:-1], sizes[2:]):
            out += [(b, a, c)] * 3 + [(c, b, a)] * 2  # positive, negative, neutral; two weight gradients
        out += [(b, sum(widths), classes), (classes, b, sum(widths))]  # the one-pass head
        return out
    raise ValueError(f"no floor for {algorithm!r}; choose one of: {', '.join(PLAIN_ALGORITHMS)}")


def parameter_count(algorithm: str, in_features: int, widths: list[int], classes: int) -> int:
    sizes = [in_features, *widths]
    hidden = sum(a * c + c for a, c in zip(sizes[:-1], sizes[1:]))
    if algorithm == "mf":
        return hidden + classes * sum(widths)
    if algorithm == "ff":
        return hidden + sum(widths) * classes + classes
    return hidden + widths[-1] * classes + classes


def _seconds(stmt: str, globals_: dict, min_run_time: float) -> float:
    """Median seconds of ``stmt`` by torch.utils.benchmark (warm-up, threads and device sync handled)."""
    from torch.utils import benchmark  # imported here: it loads torch's C++ extension machinery, which warns

    return benchmark.Timer(stmt=stmt, globals=globals_, num_threads=torch.get_num_threads()
                           ).blocked_autorange(min_run_time=min_run_time).median


def gemm_seconds(gemms: list[tuple[int, int, int]], device, dtype=torch.float32, min_run_time: float = 0.2) -> float:
    """The sum of every ``(m, k, n)`` product timed alone, in ``dtype``."""
    total = 0.0
    for m, k, n in gemms:
        a, c = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
        total += _seconds("torch.mm(a, c)", {"torch": torch, "a": a, "c": c}, min_run_time)
    return total


def adam_seconds(count: int, device, min_run_time: float = 0.2) -> float:
    """One fused Adam step over ``count`` float32 parameters (one tensor), its state already made."""
    params = [nn.Parameter(torch.randn(count, device=device))]
    params[0].grad = torch.randn_like(params[0]) * 1e-3
    opt = _adam(params)
    opt.step()  # creates the state
    return _seconds("opt.step()", {"opt": opt}, min_run_time)


def floor_step_seconds(algorithm: str, b: int, in_features: int, widths: list[int], classes: int,
                       device, min_run_time: float = 0.2, dtype=torch.float32) -> dict[str, float]:
    """The step's GEMMs (in ``dtype``: bfloat16 for ``--precision bf16``) and one fused Adam step over
    its parameters (float32), each timed alone."""
    gemms = gemm_seconds(step_gemms(algorithm, b, in_features, widths, classes), device, dtype, min_run_time)
    adam = adam_seconds(parameter_count(algorithm, in_features, widths, classes), device, min_run_time)
    return {"gemm_s": gemms, "adam_s": adam, "step_s": gemms + adam}


def cpu_bf16_support(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, bool | None]:
    """Which native bfloat16 arithmetic the CPU offers, from its flags: ``avx512_bf16`` (AVX-512 BF16
    dot products), ``amx_bf16`` and ``amx_tile`` (Intel AMX tiles, Sapphire Rapids on), ``arm_bf16``
    (an Arm CPU's ``bf16`` feature); None for each where the file cannot be read. Without any, oneDNN
    emulates bfloat16 with float32 arithmetic plus conversions, so ``--precision bf16`` is not expected
    to be faster. ``mkldnn_bf16``: what torch itself reports (``torch.ops.mkldnn._is_mkldnn_bf16_supported``)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        flags = None
    else:
        flags = set()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):  # x86 / Arm
                flags |= set(value.split())
    out = {name: (None if flags is None else flag in flags) for name, flag in
           (("avx512_bf16", "avx512_bf16"), ("amx_bf16", "amx_bf16"), ("amx_tile", "amx_tile"), ("arm_bf16", "bf16"))}
    try:
        out["mkldnn_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        out["mkldnn_bf16"] = None
    return out
