"""What a result was measured on: code version, software and hardware.

Beside the code version, Python, torch and the CPU: the GPU (model, NVML index, MIG state), the
NVIDIA driver's version (through NVML), ``CUDA_VISIBLE_DEVICES`` as the process saw it, and the
TF32 settings, which change float32 matmul and convolution results on Ampere and later GPUs.
Anything this machine cannot tell is recorded as null.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What "the code" of a run is: a change here (tracked or a new file) makes the run's tree dirty and its
# diff is kept; results/, tests and docs do not change what a run computes.
CODE_PATHS = ("algorithms", "benchmarks", "bpfree", "pyproject.toml")
SOURCE_DIFFS = "source_diffs"  # <results>/source_diffs/<sha256>.diff, beside <results>/runs


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_diff() -> str | None:
    """The code's changes against HEAD (``CODE_PATHS``: tracked edits, then every new file in full), or
    None outside a git checkout; "" for a clean tree."""
    tracked = _git("diff", "--binary", "-M", "HEAD", "--", *CODE_PATHS)
    new = _git("ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS)
    if tracked is None or new is None:
        return None
    parts = [tracked] if tracked else []
    for name in new.splitlines():
        try:  # `git diff --no-index` exits 1 when the files differ, which they always do here
            out = subprocess.run(["git", "diff", "--binary", "--no-index", "--", os.devnull, name], cwd=PROJECT_ROOT,
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        parts.append(out.stdout.strip())
    return "\n".join(parts)


# What a training run executes: a change elsewhere (tables, report, the command line, tests) changes no
# trained number, so a run stopped under one commit may go on under the next (benchmarks/run/resume.py)
TRAINING_CODE = ("algorithms", "benchmarks/common", "benchmarks/datasets", "benchmarks/measure", "benchmarks/run")


def training_code_sha256() -> str:
    """SHA-256 over every Python file of ``TRAINING_CODE`` as it is on disk (names and contents, in order)."""
    digest = hashlib.sha256()
    for path in sorted(p for folder in TRAINING_CODE for p in (PROJECT_ROOT / folder).rglob("*.py")):
        digest.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def record_source(folder: Path) -> dict:
    """``git_diff_sha256`` and ``git_diff_file``: a dirty tree's diff, kept once per content in
    ``folder/<sha256>.diff``, so that a run made from uncommitted code can still be traced to it
    (``git apply`` on its commit); the file's name is given relative to ``folder``'s parent (the results
    root). Nothing for a clean tree or outside git."""
    diff = source_diff()
    if not diff:
        return {}
    sha = hashlib.sha256(diff.encode()).hexdigest()
    path = Path(folder) / f"{sha}.diff"
    if not path.exists():
        from benchmarks.common.files import write_text_atomic
        write_text_atomic(path, diff + "\n")
    return {"git_diff_sha256": sha, "git_diff_file": f"{path.parent.name}/{path.name}"}  # beside the runs folder


def describe_environment(device: torch.device | str) -> dict:
    device = torch.device(device)
    status = _git("status", "--porcelain", "--", *CODE_PATHS)
    env = {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "cpu_model": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "gpu_model": None,
        "cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        env["gpu_model"] = torch.cuda.get_device_name(device)
    env.update(gpu_environment(device))
    return env


def tf32_settings() -> dict:
    """Whether float32 matmuls and convolutions may run in TF32 (torch's old and new switches)."""
    def get(read):
        try:
            return read()
        except Exception:  # noqa: BLE001  (a switch this torch does not have)
            return None
    return {"matmul_allow_tf32": get(lambda: torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": get(lambda: torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": get(torch.get_float32_matmul_precision),
            "matmul_fp32_precision": get(lambda: torch.backends.cuda.matmul.fp32_precision),
            "cudnn_conv_fp32_precision": get(lambda: torch.backends.cudnn.conv.fp32_precision)}


def gpu_environment(device: torch.device) -> dict:
    """Driver version, CUDA_VISIBLE_DEVICES, the GPU's NVML index and MIG state, TF32 settings."""
    from benchmarks.measure.nvml import driver_version, import_nvml, locate_gpu, mig_enabled, torch_index

    out = {"nvidia_driver": driver_version(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "gpu_nvml_index": None, "gpu_mig": None, "tf32": tf32_settings()}
    if device.type == "cuda":
        try:
            pynvml = import_nvml()
            pynvml.nvmlInit()
            try:
                location = locate_gpu(pynvml, torch_index(device))
                out["gpu_nvml_index"], out["gpu_mig"] = location.nvml_index, mig_enabled(pynvml, location)
            finally:
                pynvml.nvmlShutdown()
        except Exception as exc:  # noqa: BLE001  (no NVML: the GPU's model from torch is still there)
            out["gpu_mig"] = f"unknown (NVML: {type(exc).__name__})"
    return out


def machine_of(run: dict, with_threads: bool = False) -> str:
    """The machine a run folder was measured on: its GPU where it ran on one (``environment.device``),
    else its CPU model, with the thread count if asked (tables name it beside every figure)."""
    env = run.get("environment", {})
    if env.get("gpu_model") and str(env.get("device", "")).startswith("cuda"):
        return str(env["gpu_model"])
    cpu = env.get("cpu_model") or "CPU"
    threads = env.get("cpu_threads")
    return f"{cpu} ({threads} threads)" if with_threads and threads else str(cpu)
