"""The defects a first GPU run would have hit (issue 13), each shown on the CPU where a CPU can show it.

NVML is a stub ``pynvml`` module put into ``sys.modules`` (boards with PCI bus ids, UUIDs, an energy
counter that can fail, MIG modes, process lists); CUDA's allocator is a fake ``torch.cuda`` given to
the CUDA memory meter. The real CUDA and NVML paths are tested in tests/test_measure.py where a GPU
exists (``make gpu-check``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import benchmarks.measure.cuda_memory as cuda_memory
import benchmarks.measure.energy as energy
from algorithms import ALGORITHMS
from benchmarks.run.config import ExperimentConfig
from benchmarks.sweep.launchers import gpu_for_slot
from benchmarks.measure import METERS, Meter, RunContext
from benchmarks.measure.base import tensor_bytes
from benchmarks.measure.memory import SavedTensorCounter
from benchmarks.measure.nvml import locate_gpu
from benchmarks.run.runner import run_experiment

ROOT = Path(__file__).resolve().parent.parent


# -- a stub pynvml --------------------------------------------------------------------------------

def stub_pynvml(boards=4, counter_error=None, mig=False, processes=None):
    """A ``pynvml`` module with ``boards`` GPUs on PCI buses 0x10, 0x11, ...; NVML index = position."""
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    class NVMLError_NoPermission(NVMLError):
        pass

    class NVMLError_Unknown(NVMLError):
        pass

    m.NVMLError, m.NVMLError_NotSupported = NVMLError, NVMLError_NotSupported
    m.NVMLError_NoPermission, m.NVMLError_Unknown = NVMLError_NoPermission, NVMLError_Unknown
    m.NVML_DEVICE_MIG_ENABLE = 1
    m.calls = {"init": 0, "shutdown": 0}
    handles = [SimpleNamespace(index=i, bus=f"00000000:{0x10 + i:02x}:00.0", uuid=f"GPU-{i:04d}") for i in range(boards)]
    m.handles = handles
    m.energy_mj = 0

    def find(pred):
        for h in handles:
            if pred(h):
                return h
        raise NVMLError("Not Found")

    m.nvmlInit = lambda: m.calls.__setitem__("init", m.calls["init"] + 1)
    m.nvmlShutdown = lambda: m.calls.__setitem__("shutdown", m.calls["shutdown"] + 1)
    m.nvmlDeviceGetHandleByPciBusId = lambda bus: find(lambda h: h.bus == bus.lower())
    m.nvmlDeviceGetHandleByUUID = lambda uuid: find(lambda h: h.uuid == uuid)
    m.nvmlDeviceGetHandleByIndex = lambda i: handles[i]
    m.nvmlDeviceGetIndex = lambda h: h.index
    m.nvmlDeviceGetName = lambda h: b"Stub GPU"
    m.nvmlSystemGetDriverVersion = lambda: "550.54.15"

    def total_energy(h):
        if counter_error is not None:
            raise counter_error(m)
        m.energy_mj += 1000
        return m.energy_mj

    m.nvmlDeviceGetTotalEnergyConsumption = total_energy
    m.nvmlDeviceGetPowerUsage = lambda h: 100_000  # milliwatts

    def mig_mode(h):
        if not mig:
            raise NVMLError_NotSupported("Not Supported")
        return [1, 1]

    m.nvmlDeviceGetMigMode = mig_mode
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: [SimpleNamespace(pid=p) for p in
                                                        (processes if processes is not None else [os.getpid()])]
    return m


@pytest.fixture
def gpu_host(monkeypatch):
    """Pretend torch device i sits on PCI bus 0x10 + bus_of[i]; returns a function that installs a stub."""
    def install(stub, bus_of=(0,), visible=None):
        monkeypatch.setitem(sys.modules, "pynvml", stub)
        monkeypatch.setattr(energy, "import_nvml", lambda: stub)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(
            pci_domain_id=0, pci_bus_id=0x10 + bus_of[i], pci_device_id=0, uuid=None))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(energy, "synchronize", lambda device: None)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        return stub
    return install


class RecordingCodeCarbon:
    """Stands in for CodeCarbonEnergy: records the gpu_ids it was given."""
    made: list = []

    def __init__(self, run_dir, project, gpu_ids):
        self.gpu_ids = gpu_ids
        self.closed = False
        RecordingCodeCarbon.made.append(self)

    def start_epoch(self, epoch):
        pass

    def end_epoch(self, epoch):
        return 0.5

    def stop(self):
        return {"energy_j": 1.0, "estimate": True, "co2_kg": 0.0}

    def close(self):
        self.closed = True


def start_energy(tmp_path, device, monkeypatch, use_codecarbon=True):
    RecordingCodeCarbon.made = []
    monkeypatch.setattr(energy, "CodeCarbonEnergy", RecordingCodeCarbon)
    meter = energy.EnergyMeter(use_codecarbon=use_codecarbon)
    meter.start_run(RunContext(trainer=None, device=torch.device(device), run_dir=tmp_path, config=None))
    return meter


# -- NVML index mapping ---------------------------------------------------------------------------

def test_codecarbon_gets_the_nvml_index_of_the_runs_gpu_not_the_torch_index(gpu_host, tmp_path, monkeypatch):
    # CUDA_VISIBLE_DEVICES=2,3: torch's cuda:0 is the machine's board 2
    gpu_host(stub_pynvml(), bus_of=(2, 3), visible="2,3")
    meter = start_energy(tmp_path, "cuda:0", monkeypatch)
    assert RecordingCodeCarbon.made[0].gpu_ids == [2]  # the old code passed the torch index, [0]
    energy_block = meter.end_run()["energy"]
    assert energy_block["nvml"]["nvml_index"] == 2 and "PCI bus id" in energy_block["nvml"]["matched_by"]


def test_without_a_pci_match_the_visible_devices_entry_names_the_board(gpu_host):
    stub = gpu_host(stub_pynvml(), bus_of=(7,), visible="3")  # bus 0x17 is on no board of the stub
    location = locate_gpu(stub, 0)
    assert location.nvml_index == 3 and "CUDA_VISIBLE_DEVICES entry 3" in location.matched_by


def test_a_cpu_run_on_a_gpu_host_gives_codecarbon_no_gpu(gpu_host, tmp_path, monkeypatch):
    gpu_host(stub_pynvml())
    meter = start_energy(tmp_path, "cpu", monkeypatch)
    # None would make CodeCarbon add every GPU's idle power (or CUDA_VISIBLE_DEVICES' entries)
    assert RecordingCodeCarbon.made[0].gpu_ids == []
    assert meter.end_run()["energy"]["source"] == "codecarbon, whole run"  # the stub has no tasks


# -- NVML fallbacks and what is not measurable ----------------------------------------------------

@pytest.mark.parametrize("error", ["NVMLError_NoPermission", "NVMLError_Unknown", "NVMLError_NotSupported"])
def test_any_counter_error_falls_back_to_power_sampling_and_close_stops_the_thread(gpu_host, tmp_path,
                                                                                   monkeypatch, error):
    stub = gpu_host(stub_pynvml(counter_error=lambda m: getattr(m, error)("boom")))
    meter = start_energy(tmp_path, "cuda:0", monkeypatch, use_codecarbon=False)
    assert meter.nvml is not None and meter.nvml.method == "power sampling"
    assert meter.nvml.sampling_alive()
    meter.start_epoch(0)
    meter.end_epoch(0)
    block = meter.end_run()["energy"]
    assert block["source"].startswith("nvml (power sampling)") and error in block["nvml"]["counter_error"]
    assert not meter.nvml.sampling_alive() and stub.calls["shutdown"] >= 1


def test_a_mig_slice_is_not_booked_the_boards_energy(gpu_host, tmp_path, monkeypatch):
    gpu_host(stub_pynvml(mig=True))
    meter = start_energy(tmp_path, "cuda:0", monkeypatch)
    assert meter.nvml is None and RecordingCodeCarbon.made[0].gpu_ids == []
    block = meter.end_run()["energy"]
    assert "nvml" not in block and "not measurable per slice" in block["reason"]


def test_a_board_shared_with_another_process_keeps_nvml_figures_apart(gpu_host, tmp_path, monkeypatch):
    gpu_host(stub_pynvml(processes=[os.getpid(), 424242]))
    meter = start_energy(tmp_path, "cuda:0", monkeypatch, use_codecarbon=False)
    meter.start_epoch(0)
    meter.end_epoch(0)
    block = meter.end_run()["energy"]
    assert "nvml" not in block and block["nvml_shared"]["other_pids"] == [424242]
    assert block["energy_j"] is None and "shared with 1 other process" in block["reason"]


def test_nvml_energy_leaves_out_the_first_epoch(gpu_host, tmp_path, monkeypatch):
    gpu_host(stub_pynvml())  # the stub's counter adds 1 J at every reading
    meter = start_energy(tmp_path, "cuda:0", monkeypatch, use_codecarbon=False)
    for epoch in range(3):
        meter.start_epoch(epoch)
        meter.end_epoch(epoch)
    nv = meter.end_run()["energy"]["nvml"]
    assert nv["train_steps_energy_all_j"] == 3.0 and nv["train_steps_energy_j"] == 2.0
    assert nv["excludes_first_epoch"] is True and nv["energy_j"] == 2.0


def test_environment_records_driver_visible_devices_mig_and_tf32(gpu_host, monkeypatch):
    from benchmarks.run.environment import describe_environment
    import benchmarks.measure.nvml as nvml
    stub = gpu_host(stub_pynvml(), visible="0")
    monkeypatch.setattr(nvml, "import_nvml", lambda: stub)
    env = describe_environment("cpu")
    assert env["nvidia_driver"] == "550.54.15" and env["cuda_visible_devices"] == "0"
    assert "gpu_mig" in env and set(env["tf32"]) >= {"matmul_allow_tf32", "cudnn_allow_tf32", "float32_matmul_precision"}


# -- meters are closed when a run fails -----------------------------------------------------------

class ClosingProbe(Meter):
    name = "closing-probe"
    closed: list = []

    def close(self):
        ClosingProbe.closed.append(True)


def test_a_run_ended_by_an_exception_closes_its_meters(results_dir, monkeypatch):
    monkeypatch.setitem(METERS._entries, "closing-probe", ClosingProbe)
    ClosingProbe.closed = []

    def prune(row):
        raise RuntimeError("pruned")

    cfg = ExperimentConfig(algorithm="bp", dataset="digits", arch_args={"widths": [16]}, epochs=3,
                           measure=["closing-probe", "time"], results_dir=results_dir, quiet=True, device="cpu")
    with pytest.raises(RuntimeError, match="pruned"):
        run_experiment(cfg, on_epoch=prune)
    assert ClosingProbe.closed == [True]


def test_energy_meter_close_after_a_failure_stops_codecarbon_and_nvml(gpu_host, tmp_path, monkeypatch):
    stub = gpu_host(stub_pynvml(counter_error=lambda m: m.NVMLError_NotSupported("no")))
    meter = start_energy(tmp_path, "cuda:0", monkeypatch)
    meter.start_epoch(0)  # ... and the run dies here: end_run never comes
    meter.close()
    meter.close()  # twice is harmless
    assert RecordingCodeCarbon.made[0].closed and not meter.nvml.sampling_alive() and stub.calls["shutdown"] == 1


# -- saved-tensor counter -------------------------------------------------------------------------

def test_saved_tensor_counter_lock_is_reentrant():
    counter = SavedTensorCounter()
    done = threading.Event()

    def finaliser_during_add():  # a release from a finaliser on the thread that holds the lock
        with counter.lock:
            counter.add(1, 10)
            counter.release(1)
        done.set()

    worker = threading.Thread(target=finaliser_during_add, daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert done.is_set(), "the counter's lock deadlocked on re-entry"
    assert counter.live == 0 and counter.peak == 10


def test_a_saved_batch_counts_its_own_bytes_not_the_epochs_whole_copy():
    torch.manual_seed(0)
    xs, ys = torch.randn(4096, 64), torch.randint(0, 10, (4096,))
    trainer = ALGORITHMS.get("bp")((64,), 10, "mlp", {"widths": [32]}, {})
    params = {p.untyped_storage().data_ptr() for p in trainer.parameters()}
    peaks = {}
    for views in (False, True):
        counter = SavedTensorCounter(params)
        if views:
            counter.view_ptrs = {xs.untyped_storage().data_ptr(), ys.untyped_storage().data_ptr()}
        with counter.hooks():
            trainer.update(xs[:64], ys[:64])
        peaks[views] = counter.peak
    assert peaks[False] >= xs.numel() * 4  # the whole copy, as the meter counted before
    assert peaks[True] < xs.numel() * 4 / 10  # the batch (64 rows) and the step's activations


def test_tensor_bytes_counts_each_storage_once_on_the_device_asked():
    a = torch.zeros(100)
    assert tensor_bytes([a, a[:10], torch.zeros(5, dtype=torch.int64)]) == 400 + 40
    assert tensor_bytes([a], "cuda") == 0


# -- CUDA memory meter on a fake allocator --------------------------------------------------------

class FakeCuda:
    """The parts of torch.cuda the CUDA memory meter uses, with an allocator the test drives."""

    def __init__(self, allocated=0, reserved=0):
        self.allocated, self.reserved, self.peak = allocated, reserved, allocated
        self.calls: list[str] = []
        self.history: list[dict] = []
        fake = self

        class Memory:
            @staticmethod
            def _record_memory_history(**kwargs):
                fake.history.append(kwargs)

            @staticmethod
            def _snapshot():
                fake.calls.append("snapshot")
                return {"segments": [], "device_traces": []}

        self.memory = Memory

    def is_available(self): return True
    def current_device(self): return 0
    def synchronize(self, i=None): self.calls.append("synchronize")
    def get_device_name(self, i): return "Fake GPU"
    def memory_allocated(self, i): return self.allocated
    def memory_reserved(self, i): return self.reserved
    def max_memory_allocated(self, i): return self.peak
    def max_memory_reserved(self, i): return self.reserved

    def empty_cache(self):
        self.calls.append("empty_cache")
        self.reserved = self.allocated

    def reset_peak_memory_stats(self, i):
        self.calls.append("reset_peak")
        self.peak = self.allocated


def fake_cuda_meter(monkeypatch, tmp_path, meter_cls, fake):
    monkeypatch.setattr(meter_cls, "cuda", fake)
    monkeypatch.setattr(cuda_memory, "tensor_bytes", lambda tensors, device: tensor_bytes(tensors))
    meter = meter_cls()
    ctx = RunContext(trainer=SimpleNamespace(phase="train"), device=torch.device("cuda:0"), run_dir=tmp_path,
                     config=None)
    meter.start_run(ctx)
    return meter, ctx


def test_cuda_memory_leaves_out_the_shuffled_copy_counts_end_epoch_and_resets_reserved(monkeypatch, tmp_path):
    fake = FakeCuda(allocated=1000, reserved=9000)  # 8000 bytes cached by an earlier run in this process
    meter, ctx = fake_cuda_meter(monkeypatch, tmp_path, cuda_memory.CUDAMemoryMeter, fake)
    assert "empty_cache" in fake.calls and fake.reserved == 1000  # the earlier run's cache is gone
    copy = torch.zeros(100)  # 400 bytes: the epoch's shuffled copy of the training split
    fake.allocated += 400
    ctx.epoch_data = (copy,)
    meter.start_epoch(0)
    with meter.step_context():
        fake.peak = fake.allocated + 300  # the step's activations
    meter.after_step()
    fake.peak = fake.allocated + 5000  # trainer.end_epoch: CaFo's closed-form solve, after the last step
    meter.end_epoch(0)
    mem = meter.end_run()["cuda_memory"]
    assert mem["peak"]["allocated_bytes"] == 1000  # 1400 allocated, less the 400-byte copy
    assert mem["peak"]["step_peak_allocated_bytes"] == 1000 + 5000  # the solve's peak is in
    rows = (tmp_path / "memory_cuda.jsonl").read_text().splitlines()
    assert len(rows) == 2 and '"kind": "epoch end"' in rows[1] and '"epoch_data_bytes": 400' in rows[0]


def test_memory_history_has_no_cpp_stacks_and_is_written_after_the_epochs(monkeypatch, tmp_path):
    fake = FakeCuda(allocated=1000)
    meter, ctx = fake_cuda_meter(monkeypatch, tmp_path, cuda_memory.CUDAMemoryHistoryMeter, fake)
    assert fake.history[0]["stacks"] == "python" and fake.history[0]["max_entries"] <= 100_000
    meter.start_epoch(0)
    for _ in range(cuda_memory.HISTORY_STEPS + 2):
        with meter.step_context():
            pass
        meter.after_step()
    assert fake.history[-1] == {"enabled": None} and fake.calls.count("snapshot") == 1
    meter.end_epoch(0)
    assert not (tmp_path / cuda_memory.SNAPSHOT_FILE).exists()  # nothing written inside the epoch
    meter.end_run()
    assert (tmp_path / cuda_memory.SNAPSHOT_FILE).stat().st_size > 0


# -- GPU assignment of the local launcher ---------------------------------------------------------

def test_local_launcher_hands_out_the_parents_visible_gpus():
    assert [gpu_for_slot(s, 2, "2,3", 2) for s in (0, 1, 2)] == ["2", "3", "2"]  # not "0", "1"
    assert [gpu_for_slot(s, 2, None, 2) for s in (0, 1)] == ["0", "1"]
    assert gpu_for_slot(1, 2, "GPU-aaaa,GPU-bbbb", 2) == "GPU-bbbb"
    assert gpu_for_slot(0, 1, "2,3", 2) is None  # one job: the parent's variable is inherited as it is
    assert gpu_for_slot(1, 2, "5", 1) is None  # one GPU: the jobs share it (the energy meter says so)
    assert gpu_for_slot(0, 2, "", 0) is None


# -- the suite without Optuna and CodeCarbon (the lent GPU machine has neither) -------------------

def test_every_test_module_collects_without_optuna_and_codecarbon():
    code = ("import sys; sys.modules['optuna'] = None; sys.modules['codecarbon'] = None; import pytest; "
            "sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', 'tests']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "error" not in out.stdout.lower().split("\n")[-2]


# -- the GPU check's dry run ----------------------------------------------------------------------

def test_gpu_check_dry_run_performs_every_step_and_says_what_it_did(tmp_path):
    results = tmp_path / "results"
    out = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--results", str(results)], cwd=ROOT,
                         capture_output=True, text=True, timeout=400,
                         env=dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    steps = [line.split(" ", 1)[1] for line in out.stdout.splitlines() if line.startswith("[step] ")]
    names = [s.split(":", 1)[0] for s in steps]
    listed = subprocess.run([sys.executable, "-m", "bpfree", "gpu-check", "--list"], cwd=ROOT, capture_output=True,
                            text=True).stdout.split()[::2]
    assert names == listed == ["preflight", "tests", "table5", "fig3", "table3", "table2", "tables"]
    for step in steps:  # every step ran or says why not: nothing skipped silently
        status = step.split(": ", 1)[1].split(" - ", 1)
        assert status[0] in ("ran", "partial", "skipped") and status[1].strip(), step
    assert all(s.split(": ", 1)[1].startswith("ran") for s in steps if s.split(":")[0] in ("table5", "table3"))
    records = [json.loads(line) for line in (results / "gpu_check" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == listed and all(r["dry_run"] for r in records)
    runs = [p for p in (results / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]  # no lock files
    assert runs and all((r / "done").exists() for r in runs)
    assert (results / "gpu_check" / "tables" / "table5.md").exists()
    assert (results / "gpu_check" / "tables" / "fig3_slopes.md").exists()
