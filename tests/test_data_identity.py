"""Data identity: the content fingerprint in every run's identity, the decode cache keyed by content,
the user's own image folders and CSV files, and run keys that still find older run folders."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmarks.run.config import ExperimentConfig, with_implicit_defaults
from benchmarks.datasets import dataset_fingerprint, load_dataset
from benchmarks.datasets.fingerprint import fingerprint_files
from benchmarks.run.runner import run_experiment
from benchmarks.run.folders import prefer
from benchmarks.sweep.expand import run_key


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BPFREE_CACHE_DIR", str(tmp_path / "cache"))


def make_image_folder(root, n_per_class=6, size=(8, 6), classes=("cat", "dog"), seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_per_class), ("test", 2)):
        for c, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) // 2 + 100 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def tiny_config(dataset, results_dir, **kw):
    return ExperimentConfig(**{"algorithm": "bp", "dataset": dataset, "arch_args": {"widths": [8]}, "epochs": 1,
                               "quiet": True, "results_dir": str(results_dir), **kw})


def test_other_images_under_one_name_are_another_run(tmp_path):
    folder = make_image_folder(tmp_path / "pets")
    first = run_experiment(tiny_config(f"imagefolder:{folder}", tmp_path / "runs"))
    assert not first.reused and first.summary["status"] == "completed"
    fp = json.loads((first.run_dir / "measurement.json").read_text())["data"]["fingerprint"]
    assert fp.startswith("sha256:") and fp == dataset_fingerprint(f"imagefolder:{folder}")
    assert run_experiment(tiny_config(f"imagefolder:{folder}", tmp_path / "runs")).reused

    # one image changed in place, size kept: another fingerprint, another run, fresh decoding
    target = folder / "train" / "cat" / "000.png"
    Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(target)
    changed = run_experiment(tiny_config(f"imagefolder:{folder}", tmp_path / "runs"))
    assert not changed.reused and changed.run_dir != first.run_dir
    raw = load_dataset(f"imagefolder:{folder}")
    assert raw.fingerprint != fp and (raw.train_x == 0).all(dim=(1, 2, 3)).sum() == 1  # the black image is in

    # a file added: the decode cache must not hand back the old arrays
    Image.fromarray(np.full((6, 8, 3), 7, dtype=np.uint8)).save(folder / "train" / "dog" / "999.png")
    assert len(load_dataset(f"imagefolder:{folder}").train_y) == len(raw.train_y) + 1


def test_a_copy_has_the_same_fingerprint_and_shares_the_decode_cache(tmp_path):
    folder = make_image_folder(tmp_path / "a")
    copy = tmp_path / "b"
    shutil.copytree(folder, copy)
    assert dataset_fingerprint(f"imagefolder:{folder}") == dataset_fingerprint(f"imagefolder:{copy}")
    load_dataset(f"imagefolder:{folder}")
    caches = sorted((tmp_path / "cache").glob("images-*.npz"))
    load_dataset(f"imagefolder:{copy}")
    assert sorted((tmp_path / "cache").glob("images-*.npz")) == caches and len(caches) == 1


def test_the_stat_cache_is_only_an_accelerator(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    first = fingerprint_files([("f", path)])
    path.write_bytes(b"abd")  # same size; a new mtime_ns makes a new key, so the content is hashed again
    assert fingerprint_files([("f", path)]) != first
    for cached in (tmp_path / "cache" / "fingerprints").glob("*.txt"):
        cached.write_text("sha256:" + "0" * 64 + "\n")  # a tampered cache entry is only a lookup ...
    path.write_bytes(b"xyz")  # ... under the old key: a change of the file never finds it
    assert fingerprint_files([("f", path)]) != "sha256:" + "0" * 64


def test_image_folder_of_any_size_and_classes_from_folder_names(tmp_path):
    folder = make_image_folder(tmp_path / "x", size=(5, 3), classes=("b", "a", "c"))
    raw = load_dataset(f"imagefolder:{folder}")
    assert raw.train_x.shape[1:] == (3, 3, 5) and raw.num_classes == 3
    assert sorted(set(raw.train_y.tolist())) == [0, 1, 2] and len(raw.test_y) == 6


def write_csv(path, rows, header="f1,f2,label"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_csv_dataset_label_setting_and_carved_test_split(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(round(float(rng.normal()), 4), round(float(rng.normal()), 4), "yes" if i % 3 else "no") for i in range(60)]
    path = write_csv(tmp_path / "t.csv", rows, header="a,b,answer")
    raw = load_dataset(f"csv:{path}", data_args={"label": "answer", "test_fraction": 0.25})
    assert raw.num_classes == 2 and len(raw.test_y) == 15 and len(raw.train_y) == 45
    assert raw.train_x.shape == (45, 2)
    again = load_dataset(f"csv:{path}", data_args={"label": "answer", "test_fraction": 0.25})
    assert np.array_equal(again.test_x.numpy(), raw.test_x.numpy())  # fixed split, whatever the run's seed
    other = load_dataset(f"csv:{path}", data_args={"label": "answer", "test_fraction": 0.25, "split_seed": 1})
    assert not np.array_equal(other.test_x.numpy(), raw.test_x.numpy()) and other.fingerprint != raw.fingerprint
    # a given test file
    test = write_csv(tmp_path / "test.csv", rows[:7], header="a,b,answer")
    given = load_dataset(f"csv:{path}", data_args={"label": "answer", "test": str(test)})
    assert len(given.test_y) == 7 and len(given.train_y) == 60
    result = run_experiment(tiny_config(f"csv:{path}", tmp_path / "runs", data_args={"label": "answer"}))
    assert result.summary["status"] == "completed" and result.run_dir.name.startswith("bp_csv-t.csv_mlp_s0_")


def test_run_id_changes_with_the_data_and_ignores_fused_and_location():
    cfg = ExperimentConfig(algorithm="bp").resolve()
    assert cfg.run_id("sha256:" + "1" * 64) != cfg.run_id("sha256:" + "2" * 64) != cfg.run_id()
    unfused = ExperimentConfig(algorithm="bp", hparams={"fused": False}, results_dir="elsewhere",
                               data_dirs=["x"], quiet=True).resolve()
    assert unfused.run_id("sha256:" + "1" * 64) == cfg.run_id("sha256:" + "1" * 64)


def test_run_key_counts_older_configs_as_what_they_were():
    new = ExperimentConfig(algorithm="bp").resolve().to_dict()
    old = {k: v for k, v in new.items() if k not in ("precision", "data_args", "save")}
    old["hparams"] = {k: v for k, v in new["hparams"].items() if k != "fused"}
    assert run_key(old) == run_key(new)
    assert run_key(dict(new, precision="bf16")) != run_key(old)
    assert with_implicit_defaults(old)["precision"] == "fp32"
    assert run_key(dict(new, hparams=dict(new["hparams"], fused=False))) == run_key(new)
    dfa = ExperimentConfig(algorithm="dfa").resolve().to_dict()  # DFA's lr was constant before lr_decay
    assert run_key(dict(dfa, hparams={k: v for k, v in dfa["hparams"].items() if k != "lr_decay"})) == run_key(dfa)
    assert run_key(dict(dfa, hparams=dict(dfa["hparams"], lr_decay=0.9))) != run_key(dfa)
    # and its runs keep their ids, so that the folders made before lr_decay are reused
    assert "lr_decay" not in ExperimentConfig(algorithm="dfa").resolve().identity()["hparams"]
    assert ExperimentConfig(algorithm="dfa", hparams={"lr_decay": 0.9}).resolve().identity()["hparams"]["lr_decay"] == 0.9


def test_tables_prefer_the_newest_folder_with_a_fingerprint():
    cfg = ExperimentConfig(algorithm="bp").resolve().to_dict()
    done = {"status": "completed"}
    old = {"run_dir": "b_old", "config": cfg, "summary": done, "measurement": {"data": {}}}
    new1 = {"run_dir": "a1", "config": cfg, "summary": done, "finished_at": "2026-01-01T00:00:00Z",
            "measurement": {"data": {"fingerprint": "sha256:1"}}}
    new2 = dict(new1, run_dir="a2", finished_at="2026-02-01T00:00:00Z")
    unfinished = {"run_dir": "z", "config": cfg, "summary": {}, "measurement": {"data": {"fingerprint": "sha256:1"}}}
    chosen = prefer([new2, old, unfinished, new1], lambda r: run_key(r["config"]))
    assert [r["run_dir"] for r in chosen.values()] == ["a2"]
    assert prefer([old, unfinished], lambda r: run_key(r["config"]))[run_key(cfg)]["run_dir"] == "b_old"
