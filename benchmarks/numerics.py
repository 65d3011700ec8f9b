"""How the CPU and GPU do their arithmetic during a run: denormal flushing and mixed precision.

``run_numerics(device)`` flushes denormal floats to zero on the CPU for the length of a run, and
puts the previous setting back afterwards. Adam's second-moment estimates of rarely active units
decay into the denormal range within a few epochs, and x86 CPUs take a slow microcode path for every
operation on a denormal: on Fashion-MNIST (2x1000 MLP, batch 64, 2 cores) the epochs slowed from
5.1 to 7.7 s over three epochs without flushing and stay at the first one's speed with it, with the
same accuracy (values below 1.2e-38 carry no information for these updates). CUDA kernels keep
their own (compile-time) denormal mode; nothing is changed there.

``autocast(device, precision)`` is the context around every training step and prediction:
``fp32`` (the default: nothing changes) or ``bf16`` (``torch.autocast`` on the CPU or CUDA: matrix
products in bfloat16, weights, optimiser state and reductions in float32).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

PRECISIONS = ("fp32", "bf16")


@contextlib.contextmanager
def run_numerics(device: torch.device | str) -> Iterator[dict]:
    """Flush denormals on the CPU while the block runs; yields what was set, for environment.json."""
    device = torch.device(device)
    if device.type != "cpu":
        yield {"flush_denormal": None, "flush_denormal_note": "CUDA kernels keep their own denormal mode"}
        return
    flushed = torch.set_flush_denormal(True)  # False where the CPU cannot (no SSE3): said, not hidden
    try:
        yield {"flush_denormal": bool(flushed)}
    finally:
        torch.set_flush_denormal(False)


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The mixed-precision context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
