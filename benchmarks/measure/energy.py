"""Energy and CO2 of training, measured around the trainer from the outside.

Meter ``energy`` (select it in a config's ``measure`` list) uses every source this machine has and
records which one gave each figure:

* **NVML** (NVIDIA GPUs, through ``nvidia-ml-py``, whose module is called ``pynvml``; the
  deprecated *package* named ``pynvml`` is refused): the GPU's total-energy counter
  (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the driver loaded), read with the
  device synchronised at the start and end of every epoch's training steps and of the run. Where
  the counter is unsupported (GPUs before Volta), a thread samples ``nvmlDeviceGetPowerUsage``
  every ``POWER_SAMPLE_S`` and integrates it (trapezoids). This is the GPU board only.
* **CodeCarbon** ``OfflineEmissionsTracker`` from the start to the end of the run (training and
  evaluation), every setting passed explicitly, one CSV per run in the run folder
  (``codecarbon.csv``). It measures the GPU through NVML and the CPU through RAPL where the kernel
  exposes it; elsewhere (no ``/sys/class/powercap``, as in most containers and VMs) it *estimates*
  CPU power from a TDP table or a default per thread times the CPU load, and RAM power from its
  size. Its figures are then recorded as estimates, with the method it used.

The run summary's ``energy`` block: ``energy_j`` and ``source`` (NVML if present, else CodeCarbon,
flagged ``estimate`` when it estimated), the per-source details, CO2 from CodeCarbon with the
country it assumed. With neither source, ``{"energy_j": null, "source": "not measured here",
"reason": ...}``: never an invented number.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch

from .base import METERS, Meter, synchronize

POWER_SAMPLE_S = 0.1  # power-sampling interval of the fallback; NVML's own power average updates ~every 0.1 s
CODECARBON_POWER_S = 1.0  # CodeCarbon's sampling interval; quick runs last seconds, its default (15 s) would miss them
CODECARBON_FILE = "codecarbon.csv"
# CodeCarbon needs a country for grams of CO2 per kWh (offline it cannot locate the machine); it does not
# change the energy. Set BPFREE_CO2_COUNTRY (ISO 3166 alpha-3) to where the machine actually is.
DEFAULT_COUNTRY = "USA"
NOT_MEASURED = "not measured here"


# -- NVML ----------------------------------------------------------------------------------------

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


def _nvml_handle(pynvml, device: torch.device):
    """NVML handle of the torch CUDA device (matched by PCI bus id, since indices can differ)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    try:
        bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        return pynvml.nvmlDeviceGetHandleByPciBusId(bus), bus
    except Exception:  # noqa: BLE001  (older torch or driver: fall back to the index)
        return pynvml.nvmlDeviceGetHandleByIndex(index), f"index {index}"


class NVMLEnergy:
    """Joules used by one GPU, from its energy counter or, failing that, from sampled power."""

    def __init__(self, device: torch.device):
        self.pynvml = pynvml = import_nvml()
        pynvml.nvmlInit()
        self.handle, self.where = _nvml_handle(pynvml, device)
        self.name = pynvml.nvmlDeviceGetName(self.handle)
        self.name = self.name.decode() if isinstance(self.name, bytes) else self.name
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.method = "counter"
        except pynvml.NVMLError_NotSupported:
            self.method = "power sampling"
            self.samples: list[tuple[float, float]] = []
            self.stop_flag = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True, name="nvml-power")
            self._sample_once()
            self.thread.start()

    def _sample_once(self) -> None:
        watts = self.pynvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0  # milliwatts
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

    def close(self) -> None:
        if self.method == "power sampling":
            self.stop_flag.set()
            self.thread.join(timeout=1)
        try:
            self.pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass

    def describe(self) -> str:
        if self.method == "counter":
            return f"NVML total-energy counter of {self.name} ({self.where}), GPU board only"
        return (f"NVML power of {self.name} ({self.where}) sampled every {POWER_SAMPLE_S} s and integrated "
                "(the energy counter is not supported on this GPU), GPU board only")


# -- CodeCarbon ----------------------------------------------------------------------------------

def codecarbon_settings(run_dir: Path, project: str, gpu_ids: list[int] | None) -> dict[str, Any]:
    """Every CodeCarbon setting this suite relies on, explicit, so no config file or variable changes them."""
    return dict(project_name=project, experiment_name="bpfree-bench",
                country_iso_code=os.environ.get("BPFREE_CO2_COUNTRY", DEFAULT_COUNTRY),
                output_dir=str(run_dir), output_file=CODECARBON_FILE, on_csv_write="append",
                output_methods=["csv"],  # the CSV file only: no API, logger, Prometheus or Logfire
                measure_power_secs=CODECARBON_POWER_S, tracking_mode="process",
                log_level="error", gpu_ids=gpu_ids, pue=1.0,
                allow_multiple_runs=True)  # parallel local jobs would otherwise refuse each other's lock file


def codecarbon_method(tracker) -> dict[str, Any]:
    """How CodeCarbon got each component: measured (RAPL, NVML) or estimated (TDP, load, RAM size)."""
    parts = {}
    for hw in getattr(tracker, "_hardware", []):
        kind = type(hw).__name__
        mode = getattr(hw, "_mode", None)
        if kind == "CPU":
            measured = mode in ("intel_rapl", "intel_power_gadget", "windows_emi")
            parts["cpu"] = (f"measured ({mode})" if measured else
                            f"estimated ({mode}: TDP table or default watts per thread, times CPU load)")
        elif kind == "GPU":
            parts["gpu"] = "measured (NVML via CodeCarbon)"
        elif kind == "RAM":
            parts["ram"] = "estimated from installed RAM size"
        else:
            parts[kind.lower()] = str(hw)
    return parts


class CodeCarbonEnergy:
    def __init__(self, run_dir: Path, project: str, gpu_ids: list[int] | None):
        import logging

        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)  # its log_level applies only after init logs
        self.settings = codecarbon_settings(run_dir, project, gpu_ids)
        kwargs = dict(self.settings)
        try:
            from codecarbon.output_methods.base_output import OutputMethod
            kwargs["output_methods"] = [OutputMethod(m) for m in kwargs["output_methods"]]
        except ImportError:  # CodeCarbon before output_methods: the older flags mean the same
            kwargs.pop("output_methods")
            kwargs.update(save_to_file=True, save_to_api=False, save_to_logger=False, save_to_prometheus=False)
        self.tracker = OfflineEmissionsTracker(**kwargs)
        self.tracker.start()

    def stop(self) -> dict[str, Any]:
        self.tracker.stop()
        data = self.tracker.final_emissions_data
        method = codecarbon_method(self.tracker)
        estimate = any(v.startswith("estimated") for v in method.values())
        return {"energy_j": data.energy_consumed * 3.6e6,  # kWh -> J
                "cpu_energy_j": data.cpu_energy * 3.6e6, "gpu_energy_j": data.gpu_energy * 3.6e6,
                "ram_energy_j": data.ram_energy * 3.6e6, "co2_kg": data.emissions,
                "country_iso_code": data.country_iso_code, "duration_s": data.duration,
                "method": method, "estimate": estimate, "codecarbon_version": data.codecarbon_version,
                "file": CODECARBON_FILE,
                "settings": {k: v for k, v in self.settings.items() if k not in ("output_dir",)}}


# -- the meter -----------------------------------------------------------------------------------

@METERS.register("energy")
class EnergyMeter(Meter):
    name = "energy"

    def __init__(self, use_nvml: bool = True, use_codecarbon: bool = True):
        self.use_nvml, self.use_codecarbon = use_nvml, use_codecarbon

    def start_run(self, ctx) -> None:
        super().start_run(ctx)
        self.nvml = self.codecarbon = None
        self.reasons: dict[str, str] = {}
        device = torch.device(ctx.device)
        if not self.use_nvml:
            self.reasons["nvml"] = "NVML not requested"
        elif device.type != "cuda":
            self.reasons["nvml"] = f"the run is on {device}, not on an NVIDIA GPU"
        else:
            try:
                self.nvml = NVMLEnergy(device)
            except Exception as exc:  # noqa: BLE001  (any failure: say why, measure what else there is)
                self.reasons["nvml"] = f"NVML unavailable: {type(exc).__name__}: {exc}"
        if not self.use_codecarbon:
            self.reasons["codecarbon"] = "CodeCarbon not requested"
        else:
            gpu_ids = None
            if device.type == "cuda":
                gpu_ids = [device.index if device.index is not None else torch.cuda.current_device()]
            try:
                self.codecarbon = CodeCarbonEnergy(Path(ctx.run_dir), Path(ctx.run_dir).name, gpu_ids)
            except Exception as exc:  # noqa: BLE001
                self.reasons["codecarbon"] = f"CodeCarbon unavailable: {type(exc).__name__}: {exc}"
        self.epoch_j: list[float] = []
        if self.nvml is not None:
            synchronize(device)
            self.run_start = self.nvml.read()

    def start_epoch(self, epoch: int) -> None:
        if self.nvml is not None:
            synchronize(self.ctx.device)
            self.epoch_start = self.nvml.read()

    def end_epoch(self, epoch: int) -> dict:
        if self.nvml is None:
            return {}
        synchronize(self.ctx.device)
        joules = self.nvml.read() - self.epoch_start
        self.epoch_j.append(joules)
        return {"gpu_energy_j": joules}

    def end_run(self) -> dict:
        out: dict[str, Any] = {}
        if self.nvml is not None:
            synchronize(self.ctx.device)
            out["nvml"] = {"energy_j": self.nvml.read() - self.run_start, "method": self.nvml.method,
                           "train_steps_energy_j": sum(self.epoch_j), "describe": self.nvml.describe()}
            self.nvml.close()
        if self.codecarbon is not None:
            try:
                out["codecarbon"] = self.codecarbon.stop()
            except Exception as exc:  # noqa: BLE001
                self.reasons["codecarbon"] = f"CodeCarbon failed at stop: {type(exc).__name__}: {exc}"
        return {"energy": summarise_energy(out, self.reasons)}

    def describe(self) -> dict:
        return {"energy": (
            "GPU: NVML total-energy counter (nvidia-ml-py), device synchronised at each reading, per epoch over "
            f"the training steps and for the whole run; power sampled every {POWER_SAMPLE_S} s and integrated "
            "where the counter is unsupported. Whole run (training and evaluation): CodeCarbon "
            f"OfflineEmissionsTracker, settings explicit, measure_power_secs={CODECARBON_POWER_S}, "
            f"tracking_mode=process, file {CODECARBON_FILE}; its CPU figure is an estimate where RAPL is "
            "missing. summary.energy.source says which gave energy_j; 'not measured here' when none could")}


def summarise_energy(parts: dict[str, Any], reasons: dict[str, str]) -> dict[str, Any]:
    """The summary block: the primary figure and its source, then every source's details."""
    out: dict[str, Any] = dict(parts)
    if "nvml" in parts:
        out.update(energy_j=parts["nvml"]["energy_j"], source=f"nvml ({parts['nvml']['method']}), GPU only",
                   estimate=False)
    elif "codecarbon" in parts:
        cc = parts["codecarbon"]
        out.update(energy_j=cc["energy_j"], source="codecarbon", estimate=cc["estimate"])
    else:
        out.update(energy_j=None, source=NOT_MEASURED, estimate=None)
    if "codecarbon" in parts:
        out["co2_kg"] = parts["codecarbon"]["co2_kg"]
    if reasons:
        out["reason"] = "; ".join(f"{k}: {v}" for k, v in reasons.items())
    return out
