"""What a result was measured on: code version, software and hardware."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


def describe_environment(device: torch.device | str) -> dict:
    device = torch.device(device)
    status = _git("status", "--porcelain", "--untracked-files=no")
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
    return env
