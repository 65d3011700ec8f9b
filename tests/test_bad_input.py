"""Every bad input is one line on stderr and exit 2, with nothing written: one test per class of error
(corrupt data files, unreadable configs and specs, wrong types, values out of range, devices not
present, unusable result locations), for each command-line entry point."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_datasets import make_mnist_folder

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--epochs", "1", "--widths", "8", "--quiet"]


def run(script, *args, env=None):
    full_env = dict(os.environ, BPFREE_NO_DOWNLOAD="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "bpfree", script, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=full_env)


def assert_one_line_exit_2(proc, fragment):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


# -- corrupt data files ------------------------------------------------------------------------

def corrupt(kind, folder):
    train = folder / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(train.read_bytes())
    if kind == "truncated gz":
        train.write_bytes(train.read_bytes()[:-20])
    elif kind == "not gzip":
        train.write_bytes(b"this is not gzip data at all")
    elif kind == "wrong magic":
        train.write_bytes(gzip.compress(b"\x01\x02" + data[2:]))
    elif kind == "truncated idx":
        train.write_bytes(gzip.compress(data[:-100]))


@pytest.mark.parametrize("kind, fragment", [
    ("truncated gz", "cannot be read"), ("not gzip", "cannot be read"),
    ("wrong magic", "is not an IDX file"), ("truncated idx", "truncated"),
])
def test_corrupt_data_file(tmp_path, kind, fragment):
    make_mnist_folder(tmp_path / "data")
    corrupt(kind, tmp_path / "data")
    proc = run("run", "-d", "mnist", "--data-dir", tmp_path / "data", "--results-dir",
               tmp_path / "runs", *FAST, env={"BPFREE_CACHE_DIR": str(tmp_path / "cache")})
    assert_one_line_exit_2(proc, fragment)
    assert not (tmp_path / "runs").exists()


def test_corrupt_image_zip_and_csv(tmp_path):
    (tmp_path / "images.zip").write_bytes(b"PK\x03\x04 not really a zip")
    proc = run("run", "-d", f"imagefolder:{tmp_path / 'images.zip'}", "--results-dir",
               tmp_path / "runs", *FAST, env={"BPFREE_CACHE_DIR": str(tmp_path / "cache")})
    assert_one_line_exit_2(proc, "is not a readable zip file")
    (tmp_path / "t.csv").write_text("a,b,label\n1,x,0\n2,y,1\n")
    proc = run("run", "-d", f"csv:{tmp_path / 't.csv'}", "--results-dir", tmp_path / "runs", *FAST)
    assert_one_line_exit_2(proc, "column 'b' is not numeric")
    assert not (tmp_path / "runs").exists()


# -- unreadable config files -------------------------------------------------------------------

@pytest.mark.parametrize("name, text, fragment", [
    ("bad.yaml", "epochs: [1\n", "is not valid YAML"),
    ("bad.json", "{\"epochs\": 1,", "is not valid JSON"),
    ("empty.json", "", "is not valid JSON"),
    ("nan.json", "{\"hparams\": {\"lr\": NaN}}", "NaN is not a number JSON allows"),
    ("list.yaml", "- 1\n- 2\n", "must hold a mapping"),
])
def test_unreadable_config_file(tmp_path, name, text, fragment):
    (tmp_path / name).write_text(text)
    proc = run("run", "--config", tmp_path / name, "--results-dir", tmp_path / "runs", "--quiet")
    assert_one_line_exit_2(proc, fragment)
    assert not (tmp_path / "runs").exists()


# -- wrong types and values out of range -------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["-a", "ff", "--hp", "threshold=nan"], "threshold must be a finite number, got 'nan'"),
    (["--hp", "lr=abc"], "lr must be a finite number, got 'abc'"),
    (["--hp", "lr=Infinity"], "lr must be a finite number, got inf"),
    (["--lr", "abc"], "invalid float value: 'abc'"),
    (["--set", "val_fraction=\"abc\""], "val_fraction must be a finite number, got 'abc'"),
    (["--set", "device=5"], "device must be a string, got 5"),
    (["--arch-arg", "widths=32"], "widths must be a list of integers, got 32"),
    (["--set", "measure=\"time\""], "measure must be a list of strings, got 'time'"),
    (["--widths", ""], "--widths takes comma-separated integers"),
    (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
    (["--set", "diverge_loss_factor=0.5"], "diverge_loss_factor must be > 1"),
    (["--device", "tpu"], "device must be auto, cpu or cuda[:N]"),
])
def test_wrong_type_or_out_of_range(tmp_path, args, fragment):
    proc = run("run", *args, "--results-dir", tmp_path / "runs", "--quiet")
    assert_one_line_exit_2(proc, fragment)
    assert not (tmp_path / "runs").exists()


def test_wrong_type_in_a_config_file(tmp_path):
    for text, fragment in (("hparams: {lr: fast}\n", "lr must be a finite number, got 'fast'"),
                           ("val_fraction: abc\n", "val_fraction must be a finite number"),
                           ("device: 5\n", "device must be a string"),
                           ("arch_args: {widths: 32}\n", "widths must be a list of integers"),
                           ("measure: time\n", "measure must be a list of strings"),
                           ("hparams: fast\n", "hparams must be a mapping")):
        (tmp_path / "c.yaml").write_text(text)
        proc = run("run", "--config", tmp_path / "c.yaml", "--results-dir", tmp_path / "runs", "--quiet")
        assert_one_line_exit_2(proc, fragment)
    assert not (tmp_path / "runs").exists()


# -- devices not present -----------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path):
    proc = run("run", "--device", "cuda", "--results-dir", tmp_path / "runs", "--quiet")
    assert_one_line_exit_2(proc, "no CUDA device is available here")
    proc = run("latency", "--device", "cuda", "--dataset", "digits", "--out", tmp_path / "lat")
    assert_one_line_exit_2(proc, "no CUDA device is available here")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lat").exists()


# -- unusable result locations -----------------------------------------------------------------

def test_results_folder_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = run("run", "--results-dir", tmp_path / "file" / "runs", *FAST)
    assert_one_line_exit_2(proc, "is a file, not a folder")
    proc = run("sweep", "fig3", "--results", tmp_path / "file")
    assert_one_line_exit_2(proc, "is a file, not a folder")
    proc = run("latency", "--dataset", "digits", "--out", tmp_path / "file")
    assert_one_line_exit_2(proc, "is a file, not a folder")
    proc = run("tune", "-a", "bp", "--trials", "1", "--studies-dir", tmp_path / "file")
    assert_one_line_exit_2(proc, "is a file, not a folder")
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_results_folder_that_cannot_be_written(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    proc = run("run", "--results-dir", locked / "runs", *FAST)
    assert_one_line_exit_2(proc, "is not writable here")


# -- the other entry points ----------------------------------------------------------------------

@pytest.mark.parametrize("script, args, fragment", [
    ("tune", ["-a", "bp", "--trials", "0"], "--trials must be >= 1"),
    ("tune", ["-a", "bp", "--trials", "1", "--hp", "lr=abc"], "lr must be a finite number"),
    ("tune", ["-a", "bp"], "--trials N is required"),
    ("latency", ["--threads", "0"], "--threads must be >= 1"),
    ("latency", ["--profile", "slow"], "invalid choice: 'slow'"),
    ("latency", ["--dataset", "mnits"], "unknown dataset 'mnits'"),
    ("compare", ["--widths", "a,b"], "--widths takes comma-separated integers"),
    ("compare", ["--algorithms", "bp,xx"], "unknown algorithm 'xx'"),
    ("compare", ["--epochs", "0"], "epochs must be a positive integer"),
    ("compare", ["--epochs", "x"], "invalid int value: 'x'"),
    ("sweep", ["table3", "--jobs", "0"], "--jobs must be >= 1"),
    ("sweep", ["table3", "--jobs", "x"], "invalid int value: 'x'"),
    ("plots", ["--only", "fig9"], "invalid choice: 'fig9'"),
])
def test_other_entry_points(tmp_path, script, args, fragment):
    extra = {"tune": ["--studies-dir", tmp_path / "studies"], "latency": ["--out", tmp_path / "lat"],
             "compare": ["--results-dir", tmp_path / "demo"], "sweep": ["--results", tmp_path / "res"],
             "plots": ["--out", tmp_path / "plots"]}[script]
    proc = run(script, *args, *extra)
    assert_one_line_exit_2(proc, fragment)
    assert not any(tmp_path.iterdir())


def test_invalid_sweep_spec(tmp_path):
    for text, fragment in (("name: x\nprofiles: {quick: {}\n", "is not valid YAML"),
                           ("name: x\nprofiles: {quick: {}}\ngroups: 3\n", "groups must be a list"),
                           ("- 1\n", "must hold a mapping")):
        (tmp_path / "spec.yaml").write_text(text)
        proc = run("sweep", tmp_path / "spec.yaml", "--results", tmp_path / "res")
        assert_one_line_exit_2(proc, fragment)
    assert not (tmp_path / "res").exists()


def test_tune_studies_dir_holds_the_params_file(tmp_path):
    pytest.importorskip("optuna")
    default = ROOT / "results" / "studies" / "best_params.json"
    before = default.stat().st_mtime_ns if default.exists() else None
    proc = run("tune", "-a", "bp", "--widths", "8", "--epochs", "1", "--trials", "1", "--studies-dir",
               tmp_path / "studies", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "studies" / "best_params.json").exists()
    assert (default.stat().st_mtime_ns if default.exists() else None) == before
