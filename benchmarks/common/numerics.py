"""How the CPU and GPU do their arithmetic during a run: denormal flushing and mixed precision.

Denormal floats are flushed to zero on the CPU for the whole process, from the moment this module is
imported (the runner imports it). Adam's moment estimates of units that stop learning (dead ReLUs)
decay into the denormal range within an epoch, and x86 CPUs take a slow microcode path for every
operation on a denormal: a fused Adam step over 1.8M parameters whose state is denormal takes
48.5 ms unflushed and 1.6 ms flushed (2 threads). The flag is per thread (the MXCSR register) and a
thread inherits it only when it is created, so it must be set before torch starts its intra-op
thread pool: set after the pool exists, only the calling thread flushes and the same step takes
3.2 ms. Values below 1.2e-38 carry no information for these updates; the accuracy is the same.
``run_numerics(device)`` makes sure of it around a run and yields what was set, for
environment.json. CUDA kernels keep their own (compile-time) denormal mode; nothing is changed there.

``autocast(device, precision)`` is the context around every training step and prediction:
``fp32`` (the default: nothing changes) or ``bf16`` (``torch.autocast`` on the CPU or CUDA: matrix
products in bfloat16, weights, optimiser state and reductions in float32).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

PRECISIONS = ("fp32", "bf16")

# Process-wide, before any parallel torch operation has started the thread pool (see above). False
# where the CPU cannot flush (no SSE3): said in environment.json, not hidden.
FLUSHED_AT_IMPORT = torch.set_flush_denormal(True)


@contextlib.contextmanager
def run_numerics(device: torch.device | str) -> Iterator[dict]:
    """Denormals flushed on the CPU during the block; yields what was set, for environment.json."""
    device = torch.device(device)
    if device.type != "cpu":
        yield {"flush_denormal": None, "flush_denormal_note": "CUDA kernels keep their own denormal mode"}
        return
    flushed = torch.set_flush_denormal(True)  # the calling thread; the pool's threads since this module's import
    yield {"flush_denormal": bool(flushed and FLUSHED_AT_IMPORT),
           "flush_denormal_note": "process-wide, set when benchmarks.common.numerics was imported"}


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The mixed-precision context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
