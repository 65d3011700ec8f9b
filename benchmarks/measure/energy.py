"""Energy and CO2 of training, measured around the trainer from the outside.

Meter ``energy`` (select it in a config's ``measure`` list) uses every source this machine has and
records which one gave each figure:

* **NVML** (NVIDIA GPUs, through ``nvidia-ml-py``; ``benchmarks/measure/nvml.py``): the board's
  total-energy counter, read with the device synchronised at the start and end of every epoch's
  training steps and of the run. Where reading the counter fails for any reason (unsupported
  before Volta, no permission, an unknown NVML error) a thread samples the board's power every
  ``POWER_SAMPLE_S`` and integrates it; the counter's error is recorded. GPU board only.
* **CodeCarbon** ``OfflineEmissionsTracker`` from the start to the end of the run (training and
  evaluation, epoch 1 included), and one CodeCarbon *task* (``start_task``/``stop_task``) over each
  epoch's training steps, so that training alone has a figure on a machine without NVML too; every
  setting passed explicitly, one CSV per run in the run folder (``codecarbon.csv``). Its ``gpu_ids`` are NVML indices: the run's own board, matched by PCI bus id
  (``nvml.locate_gpu``), and none at all for a run on the CPU, so that a CPU run on a GPU host does
  not add the idle power of every GPU. It measures the CPU through RAPL where the kernel exposes
  it; elsewhere it *estimates* CPU power from a TDP table or a default per thread times the CPU
  load, and RAM power from its size; such figures are recorded as estimates, with the method.

What is not measurable is said, never booked:

* **MIG**: a slice's process uses part of a board whose counter and power are the whole board's:
  NVML energy is "not measurable per MIG slice", and CodeCarbon is given no GPU.
* **A shared board** (two jobs on one GPU, e.g. ``--jobs 2`` on a one-GPU machine): the counter
  books every process's energy. Other compute processes are looked for at the run's start and at
  every epoch's end; where one was seen, the NVML figures go to ``energy.nvml_shared`` (kept for
  inspection, with the PIDs) instead of ``energy.nvml``, and the summary's ``energy_j`` is not
  taken from them. Where NVML cannot list processes, ``shared_check`` says so.

The figures leave out epoch 1 (CUDA start-up, allocator growth, kernel selection) where there are
several epochs: ``nvml.train_steps_energy_j`` is the energy of the training steps of the epochs
after the first, ``train_steps_energy_all_j`` of every epoch, ``first_epoch_energy_j`` of the first,
``run_energy_j`` from the run's start to its end (evaluation included); CodeCarbon's block has the same
``train_steps_*`` fields from its tasks beside its whole-run ``energy_j``. The summary's ``energy_j``:
NVML's steady-state training steps where NVML measured, else CodeCarbon's (training steps where its
tasks measured every epoch, else the whole run; flagged ``estimate`` when it estimated), else
``{"energy_j": null, "source": "not measured here", "reason": ...}``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from .base import METERS, Meter, synchronize
from .nvml import POWER_SAMPLE_S, NVMLEnergy, import_nvml, locate_gpu, mig_enabled, other_processes, torch_index
from .timing import steady_state

__all__ = ["EnergyMeter", "NOT_MEASURED", "POWER_SAMPLE_S", "import_nvml", "summarise_energy"]

CODECARBON_POWER_S = 1.0  # CodeCarbon's sampling interval; quick runs last seconds, its default (15 s) would miss them
CODECARBON_FILE = "codecarbon.csv"
# CodeCarbon needs a country for grams of CO2 per kWh (offline it cannot locate the machine); it does not
# change the energy. Set BPFREE_CO2_COUNTRY (ISO 3166 alpha-3) to where the machine actually is.
DEFAULT_COUNTRY = "USA"
NOT_MEASURED = "not measured here"
MIG_REASON = ("the GPU is a MIG slice (or on a MIG-partitioned board): NVML's energy and power are the whole "
              "board's, so energy is not measurable per slice")


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


def codecarbon_method(tracker, gpu_ids: list[int] | None = None) -> dict[str, Any]:
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
            parts["gpu"] = (f"measured (NVML via CodeCarbon, NVML index {gpu_ids})" if gpu_ids
                            else "not tracked (no GPU of this run's is measurable: a CPU run, or a MIG slice)")
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
        self.gpu_ids = gpu_ids
        self.settings = codecarbon_settings(run_dir, project, gpu_ids)
        kwargs = dict(self.settings)
        try:
            from codecarbon.output_methods.base_output import OutputMethod
            kwargs["output_methods"] = [OutputMethod(m) for m in kwargs["output_methods"]]
        except ImportError:  # CodeCarbon before output_methods: the older flags mean the same
            kwargs.pop("output_methods")
            kwargs.update(save_to_file=True, save_to_api=False, save_to_logger=False, save_to_prometheus=False)
        self.tracker = OfflineEmissionsTracker(**kwargs)
        self.started = time.perf_counter()  # CodeCarbon's own duration restarts with every task
        self.tracker.start()
        self.stopped = False
        self.epoch_j: list[float] = []
        self.task_error: str | None = None  # why some epoch's training steps have no task figure

    def start_epoch(self, epoch: int) -> None:
        """A CodeCarbon task over this epoch's training steps; evaluation comes after ``end_epoch``."""
        try:
            self.tracker.start_task(f"train_epoch_{epoch}")
        except Exception as exc:  # noqa: BLE001 - the whole-run figure still stands
            self.task_error = f"start_task failed in epoch {epoch}: {type(exc).__name__}: {exc}"

    def end_epoch(self, epoch: int) -> float | None:
        """The epoch's training-steps energy in J, or None (and ``task_error``) where the task gave none."""
        try:
            data = self.tracker.stop_task()
        except Exception as exc:  # noqa: BLE001
            data, self.task_error = None, f"stop_task failed in epoch {epoch}: {type(exc).__name__}: {exc}"
        if data is None:
            self.task_error = self.task_error or f"CodeCarbon measured no task in epoch {epoch}"
            return None
        self.epoch_j.append(data.energy_consumed * 3.6e6)  # kWh -> J
        return self.epoch_j[-1]

    def stop(self) -> dict[str, Any]:
        self.stopped = True
        self.tracker.stop()
        data = self.tracker.final_emissions_data
        method = codecarbon_method(self.tracker, self.gpu_ids)
        estimate = any(v.startswith("estimated") for v in method.values())
        out = {"energy_j": data.energy_consumed * 3.6e6,  # kWh -> J
               "cpu_energy_j": data.cpu_energy * 3.6e6, "gpu_energy_j": data.gpu_energy * 3.6e6,
               "ram_energy_j": data.ram_energy * 3.6e6, "co2_kg": data.emissions,
               "country_iso_code": data.country_iso_code, "duration_s": time.perf_counter() - self.started,
               "method": method, "estimate": estimate, "codecarbon_version": data.codecarbon_version,
               "file": CODECARBON_FILE, "includes_first_epoch": True,
               "settings": {k: v for k, v in self.settings.items() if k not in ("output_dir",)}}
        complete = bool(self.epoch_j) and self.task_error is None
        steady, excluded = steady_state(self.epoch_j) if complete else ([], False)
        out.update(train_steps_energy_j=sum(steady) if complete else None,
                   train_steps_energy_all_j=sum(self.epoch_j) if complete else None,
                   first_epoch_energy_j=self.epoch_j[0] if complete else None,
                   excludes_first_epoch=excluded, train_steps_error=self.task_error)
        return out

    def close(self) -> None:
        """Stop the tracker's scheduler thread if ``stop`` was never reached (a failed run)."""
        if not self.stopped:
            self.stopped = True
            self.tracker.stop()


def codecarbon_gpu_ids(device: torch.device, nvml_index: int | None, mig: bool | None) -> tuple[list[int], str | None]:
    """CodeCarbon's ``gpu_ids`` (NVML indices) for a run on ``device``, and why the GPU is left out, if it is.

    Never None: CodeCarbon reads None as "every GPU of the machine" (or CUDA_VISIBLE_DEVICES' entries
    taken as NVML indices), which books idle boards to a CPU run and the wrong board to a GPU run."""
    if device.type != "cuda":
        return [], None
    if mig:
        return [], MIG_REASON
    if nvml_index is None:
        return [], "the run's GPU could not be matched to an NVML index, so CodeCarbon measures no GPU"
    return [nvml_index], None


# -- the meter -----------------------------------------------------------------------------------

@METERS.register("energy")
class EnergyMeter(Meter):
    name = "energy"

    def __init__(self, use_nvml: bool = True, use_codecarbon: bool = True):
        self.use_nvml, self.use_codecarbon = use_nvml, use_codecarbon
        self.nvml = self.codecarbon = None

    def start_run(self, ctx) -> None:
        super().start_run(ctx)
        self.nvml = self.codecarbon = None
        self.reasons: dict[str, str] = {}
        self.others: set[int] = set()
        self.shared_check: str = "not applicable (no NVML)"
        self.epoch_j: list[float] = []
        device = torch.device(ctx.device)
        nvml_index, mig = None, None
        if device.type == "cuda":
            nvml_index, mig = self._open_nvml(device)
        elif self.use_nvml:
            self.reasons["nvml"] = f"the run is on {device}, not on an NVIDIA GPU"
        else:
            self.reasons["nvml"] = "NVML not requested"
        if not self.use_codecarbon:
            self.reasons["codecarbon"] = "CodeCarbon not requested"
        else:
            gpu_ids, why = codecarbon_gpu_ids(device, nvml_index, mig)
            if why:
                self.reasons["codecarbon_gpu"] = why
            try:
                self.codecarbon = CodeCarbonEnergy(Path(ctx.run_dir), Path(ctx.run_dir).name, gpu_ids)
            except Exception as exc:  # noqa: BLE001
                self.reasons["codecarbon"] = f"CodeCarbon unavailable: {type(exc).__name__}: {exc}"
        if self.nvml is not None:
            self._look_for_other_processes()
            synchronize(device)
            self.run_start = self.nvml.read()

    def _open_nvml(self, device: torch.device) -> tuple[int | None, bool | None]:
        """Open NVML on the run's board unless it is a MIG slice; (NVML index, MIG state) for CodeCarbon."""
        try:
            pynvml = import_nvml()
            pynvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001  (any failure: say why, measure what else there is)
            self.reasons["nvml"] = f"NVML unavailable: {type(exc).__name__}: {exc}"
            return None, None
        try:
            location = locate_gpu(pynvml, torch_index(device))
            mig = mig_enabled(pynvml, location)
            if mig:
                self.reasons["nvml"] = MIG_REASON
            elif self.use_nvml:
                self.nvml = NVMLEnergy(pynvml, location)
            else:
                self.reasons["nvml"] = "NVML not requested"
            return location.nvml_index, mig
        except Exception as exc:  # noqa: BLE001
            self.reasons["nvml"] = f"NVML unavailable: {type(exc).__name__}: {exc}"
            return None, None
        finally:
            if self.nvml is None:
                try:
                    pynvml.nvmlShutdown()
                except Exception:  # noqa: BLE001
                    pass

    def _look_for_other_processes(self) -> None:
        pids = other_processes(self.nvml.pynvml, self.nvml.handle)
        if pids is None:
            self.shared_check = "NVML could not list the board's processes: sharing not checked"
        else:
            self.others.update(pids)
            if not self.shared_check.startswith("NVML could not"):
                self.shared_check = "compute processes listed at the run's start and every epoch's end"

    def start_epoch(self, epoch: int) -> None:
        synchronize(self.ctx.device)
        if self.nvml is not None:
            self.epoch_start = self.nvml.read()
        if self.codecarbon is not None:
            self.codecarbon.start_epoch(epoch)

    def end_epoch(self, epoch: int) -> dict:
        synchronize(self.ctx.device)
        row = {}
        if self.codecarbon is not None:
            row["codecarbon_train_energy_j"] = self.codecarbon.end_epoch(epoch)
        if self.nvml is not None:
            joules = self.nvml.read() - self.epoch_start
            self.epoch_j.append(joules)
            self._look_for_other_processes()
            row["gpu_energy_j"] = joules
        return row

    def end_run(self) -> dict:
        out: dict[str, Any] = {}
        if self.nvml is not None:
            synchronize(self.ctx.device)
            steady, excluded = steady_state(self.epoch_j)
            block = {"energy_j": sum(steady), "train_steps_energy_j": sum(steady),
                     "train_steps_energy_all_j": sum(self.epoch_j),
                     "first_epoch_energy_j": self.epoch_j[0] if self.epoch_j else None,
                     "excludes_first_epoch": excluded, "run_energy_j": self.nvml.read() - self.run_start,
                     "method": self.nvml.method, "counter_error": self.nvml.counter_error,
                     "gpu": self.nvml.name, "nvml_index": self.nvml.location.nvml_index,
                     "matched_by": self.nvml.location.matched_by, "shared_check": self.shared_check,
                     "describe": self.nvml.describe()}
            if self.others:
                block["other_pids"] = sorted(self.others)
                out["nvml_shared"] = block
                self.reasons["nvml"] = (f"the GPU board was shared with {len(self.others)} other process(es) "
                                        "during the run: its energy counter books theirs too, so NVML's figures "
                                        "are kept under nvml_shared and not used")
            else:
                out["nvml"] = block
        if self.codecarbon is not None:
            try:
                out["codecarbon"] = self.codecarbon.stop()
            except Exception as exc:  # noqa: BLE001
                self.reasons["codecarbon"] = f"CodeCarbon failed at stop: {type(exc).__name__}: {exc}"
        self.close()
        return {"energy": summarise_energy(out, self.reasons)}

    def close(self) -> None:
        if self.nvml is not None:
            self.nvml.close()
        if self.codecarbon is not None:
            try:
                self.codecarbon.close()
            except Exception:  # noqa: BLE001  (a tracker that cannot stop has nothing left to release)
                pass

    def describe(self) -> dict:
        return {"energy": (
            "GPU: NVML total-energy counter (nvidia-ml-py) of the run's board (matched by PCI bus id), device "
            "synchronised at each reading, per epoch over the training steps and for the whole run; power sampled "
            f"every {POWER_SAMPLE_S} s and integrated where the counter fails; not measured on a MIG slice; "
            "figures of a board shared with other processes kept apart (nvml_shared) and not used; "
            "train_steps_energy_j leaves out epoch 1 when there are several. CodeCarbon OfflineEmissionsTracker "
            "over the whole run (training and evaluation) and one CodeCarbon task over each epoch's training "
            f"steps (train_steps_energy_j, epoch 1 left out likewise), settings explicit, gpu_ids = the run's NVML "
            f"index (none on the CPU), measure_power_secs={CODECARBON_POWER_S}, tracking_mode=process, file "
            f"{CODECARBON_FILE}; its CPU figure is an estimate where RAPL is missing. summary.energy.source says "
            "which gave energy_j; 'not measured here' when none could")}


def summarise_energy(parts: dict[str, Any], reasons: dict[str, str]) -> dict[str, Any]:
    """The summary block: the primary figure and its source, then every source's details."""
    out: dict[str, Any] = dict(parts)
    if "nvml" in parts:
        nv = parts["nvml"]
        steps = "training steps after epoch 1" if nv.get("excludes_first_epoch") else "training steps"
        out.update(energy_j=nv["energy_j"], source=f"nvml ({nv['method']}), GPU only, {steps}", estimate=False)
    elif "codecarbon" in parts:
        cc = parts["codecarbon"]
        if cc.get("train_steps_energy_j") is not None:
            steps = "training steps after epoch 1" if cc.get("excludes_first_epoch") else "training steps"
            out.update(energy_j=cc["train_steps_energy_j"], source=f"codecarbon, {steps}", estimate=cc["estimate"])
        else:
            out.update(energy_j=cc["energy_j"], source="codecarbon, whole run", estimate=cc["estimate"])
    else:
        out.update(energy_j=None, source=NOT_MEASURED, estimate=None)
    if "codecarbon" in parts:
        out["co2_kg"] = parts["codecarbon"]["co2_kg"]
    if reasons:
        out["reason"] = "; ".join(f"{k}: {v}" for k, v in reasons.items())
    return out
