"""NVML for the energy meter: which board a torch CUDA device is, and its energy.

* ``import_nvml``: the ``pynvml`` module of nvidia-ml-py (the deprecated package of the same name
  is refused).
* ``locate_gpu``: the NVML handle and NVML index of a torch CUDA device. Torch numbers the devices
  that ``CUDA_VISIBLE_DEVICES`` leaves visible (in CUDA's order), NVML numbers every board of the
  machine (in PCI order), so the two indices differ under ``CUDA_VISIBLE_DEVICES`` and may differ
  without it. The device is matched by its PCI bus id, else its UUID, else the
  ``CUDA_VISIBLE_DEVICES`` entry at the torch index; the match says which was used.
* ``mig_enabled``: whether the board is partitioned (MIG). A MIG slice's process runs on a part of
  the board, while NVML's energy counter and power reading are the whole board's: energy is then
  *not measurable per slice*, and the meter says so instead of booking the board's energy to one slice.
* ``other_processes``: the other compute processes on the board. The energy counter is board-wide,
  so two jobs on one GPU each read the other's energy too.
* ``NVMLEnergy``: joules from the board's total-energy counter; where reading it fails for any
  reason (not supported before Volta, no permission, an unknown error), from power sampled every
  ``POWER_SAMPLE_S`` in a thread and integrated, with the counter's error recorded.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

POWER_SAMPLE_S = 0.1  # power-sampling interval of the fallback; NVML's own power average updates ~every 0.1 s


def import_nvml():
    """The ``pynvml`` module from nvidia-ml-py; refuses the deprecated ``pynvml`` distribution."""
    try:
        providers = importlib.metadata.packages_distributions().get("pynvml", [])
    except Exception:  # noqa: BLE001  (metadata unreadable: judge by import below)
        providers = []
    if "pynvml" in providers:
        raise RuntimeError("the deprecated 'pynvml' package provides the pynvml module here; "
                           "uninstall it and install nvidia-ml-py")
    try:
        import pynvml
    except ImportError:
        raise RuntimeError("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None
    if providers and "nvidia-ml-py" not in providers:
        raise RuntimeError(f"module pynvml comes from {providers}, not nvidia-ml-py")
    return pynvml


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def visible_devices() -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (indices, ``GPU-``/``MIG-`` UUIDs), or None where unset."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def torch_index(device: torch.device | str) -> int:
    device = torch.device(device)
    return device.index if device.index is not None else torch.cuda.current_device()


@dataclass
class GPULocation:
    handle: Any
    nvml_index: int | None
    matched_by: str  # how the torch device was matched to the NVML board
    visible_entry: str | None  # this device's CUDA_VISIBLE_DEVICES entry, where set


def locate_gpu(pynvml, index: int) -> GPULocation:
    """The NVML board of torch CUDA device ``index`` (see the module docstring for the order of matches)."""
    visible = visible_devices()
    entry = visible[index] if visible is not None and index < len(visible) else None
    props = torch.cuda.get_device_properties(index)
    handle, how, errors = None, "", []
    try:
        bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        handle, how = pynvml.nvmlDeviceGetHandleByPciBusId(bus), f"PCI bus id {bus}"
    except Exception as exc:  # noqa: BLE001  (older torch without the PCI fields, or NVML refused)
        errors.append(f"PCI bus id: {type(exc).__name__}")
    if handle is None and getattr(props, "uuid", None) is not None:
        uuid = str(props.uuid)
        uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        try:
            handle, how = pynvml.nvmlDeviceGetHandleByUUID(uuid), f"UUID {uuid}"
        except Exception as exc:  # noqa: BLE001
            errors.append(f"UUID: {type(exc).__name__}")
    if handle is None and entry is not None:
        if entry.isdigit():
            handle, how = pynvml.nvmlDeviceGetHandleByIndex(int(entry)), f"CUDA_VISIBLE_DEVICES entry {entry}"
        else:
            handle, how = pynvml.nvmlDeviceGetHandleByUUID(entry), f"CUDA_VISIBLE_DEVICES entry {entry}"
    if handle is None:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        how = f"index {index} (CUDA_VISIBLE_DEVICES unset; CUDA's and NVML's orders assumed equal)"
    if errors:
        how += f" ({'; '.join(errors)} failed)"
    try:
        nvml_index = int(pynvml.nvmlDeviceGetIndex(handle))
    except Exception:  # noqa: BLE001  (a MIG device handle has no board index)
        nvml_index = None
    return GPULocation(handle, nvml_index, how, entry)


def mig_enabled(pynvml, location: GPULocation) -> bool | None:
    """True where the board is partitioned (MIG) or the device is a MIG slice; None where NVML cannot say."""
    if location.visible_entry is not None and location.visible_entry.startswith("MIG-"):
        return True
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(location.handle)
    except pynvml.NVMLError_NotSupported:
        return False  # a board without MIG
    except Exception:  # noqa: BLE001
        return None
    return int(current) == int(getattr(pynvml, "NVML_DEVICE_MIG_ENABLE", 1))


def other_processes(pynvml, handle) -> list[int] | None:
    """PIDs of the other compute processes on the board, or None where NVML cannot list them.

    This process is left out by its PID; in a container NVML may report host PIDs, which match none
    here, and then one entry is taken to be this process (which holds a CUDA context by now).
    """
    try:
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:  # noqa: BLE001
        return None
    pids = [int(p.pid) for p in procs]
    own = os.getpid()
    if own in pids:
        return [p for p in pids if p != own]
    return pids[1:]


class NVMLEnergy:
    """Joules used by one GPU board, from its energy counter or, failing that, from sampled power."""

    def __init__(self, pynvml, location: GPULocation):
        self.pynvml, self.location, self.handle = pynvml, location, location.handle
        self.name = _text(pynvml.nvmlDeviceGetName(self.handle))
        self.counter_error: str | None = None
        self.sample_errors: list[str] = []
        self.thread = None
        self.closed = False
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.method = "counter"
        except pynvml.NVMLError as exc:  # not supported, no permission, unknown: power sampling instead
            self.counter_error = f"{type(exc).__name__}: {exc}"
            self.method = "power sampling"
            self.samples: list[tuple[float, float]] = []
            self._sample_once(raise_errors=True)  # fails here (NVML dropped, with the reason) if power fails too
            self.stop_flag = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True, name="nvml-power")
            self.thread.start()

    def _sample_once(self, raise_errors: bool = False) -> None:
        try:
            watts = self.pynvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0  # milliwatts
        except Exception as exc:  # noqa: BLE001  (a failed sample is skipped and counted, the thread goes on)
            if raise_errors:
                raise
            self.sample_errors.append(f"{type(exc).__name__}: {exc}")
            return
        self.samples.append((time.perf_counter(), watts))

    def _sample(self) -> None:
        while not self.stop_flag.wait(POWER_SAMPLE_S):
            self._sample_once()

    def read(self) -> float:
        """A reading in joules: the counter, or the integral of sampled power up to now."""
        if self.method == "counter":
            return self.pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0  # millijoules
        self._sample_once()
        samples = list(self.samples)
        return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(samples, samples[1:]))

    def sampling_alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.thread is not None:
            self.stop_flag.set()
            self.thread.join(timeout=2)
        try:
            self.pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass

    def describe(self) -> str:
        where = f"{self.name}, NVML index {self.location.nvml_index}, matched by {self.location.matched_by}"
        if self.method == "counter":
            return f"NVML total-energy counter of {where}; GPU board only"
        return (f"NVML power of {where} sampled every {POWER_SAMPLE_S} s and integrated (the energy counter "
                f"failed: {self.counter_error}); GPU board only"
                + (f"; {len(self.sample_errors)} samples failed" if self.sample_errors else ""))


def driver_version() -> str | None:
    """The NVIDIA driver's version through NVML, or None where there is no NVML or driver."""
    try:
        pynvml = import_nvml()
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001
        return None
    try:
        return _text(pynvml.nvmlSystemGetDriverVersion())
    except Exception:  # noqa: BLE001
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
