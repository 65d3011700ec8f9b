"""Dataset sources and splitting: IDX and image-folder readers, missing data, train-only normalisation."""

import gzip
import io
import struct
import zipfile

import numpy as np
import pytest
import torch

from benchmarks.datasets import DATASETS, DatasetCorrupt, DatasetUnavailable, load_dataset, prepare_splits
from benchmarks.datasets.idx import read_idx


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = b"\x00\x00" + bytes([codes[array.dtype], array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    data = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def make_mnist_folder(root, compress=True, n_train=30, n_test=10):
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for name, array in arrays.items():
        write_idx(folder / name, array, compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_reads_idx_files_gz_or_not(tmp_path, compress):
    arrays = make_mnist_folder(tmp_path, compress)
    raw = load_dataset("mnist", [tmp_path])
    assert raw.train_x.shape == (30, 1, 28, 28) and raw.test_x.shape == (10, 1, 28, 28)
    assert torch.equal(raw.train_x[3, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"][3]).float() / 255)
    assert raw.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert raw.exact and raw.name == "mnist"


def test_truncated_idx_file_is_refused(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    write_idx(path, np.arange(10, dtype=np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DatasetCorrupt, match="truncated"):
        read_idx(path)


def test_missing_dataset_is_one_line_naming_files_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("BPFREE_NO_DOWNLOAD", "1")
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("fmnist", [tmp_path])
    message = str(err.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte" in message and str(tmp_path) in message
    assert "dataset-fashion-mnist" in message


def make_image_zip(path, classes, per_split=2, size=4):
    from PIL import Image

    rng = np.random.default_rng(1)
    expected = {"train": [], "test": []}
    with zipfile.ZipFile(path, "w") as zf:
        for split in ("train", "test"):
            for label, cls in enumerate(classes):
                for k in range(per_split):
                    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(pixels).save(buf, format="PNG")  # lossless, so pixels compare exactly
                    zf.writestr(f"{split}/{cls}/{k:04d}.png", buf.getvalue())
                    expected[split].append((label, pixels))
    return expected


def test_cifar10_jpeg_reads_a_zip_keeps_its_name_and_caches(tmp_path, monkeypatch):
    from benchmarks.datasets.images import CIFAR10_CLASSES

    monkeypatch.setenv("BPFREE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cifar10-jpeg").mkdir()
    expected = make_image_zip(tmp_path / "cifar10-jpeg" / "cifar10-jpeg.zip", CIFAR10_CLASSES)
    raw = load_dataset("cifar10-jpeg", [tmp_path])
    assert raw.name == "cifar10-jpeg" and not raw.exact
    assert raw.train_x.shape == (20, 3, 4, 4) and raw.num_classes == 10
    labels = sorted(label for label, _ in expected["train"])
    assert sorted(raw.train_y.tolist()) == labels
    for split, xs, ys in (("train", raw.train_x, raw.train_y), ("test", raw.test_x, raw.test_y)):
        for label, pixels in expected[split]:  # every image with its own label, wherever it went
            image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
            (at,) = [i for i in range(len(ys)) if torch.equal(xs[i], image)]
            assert ys[at] == label
    # read class by class, but stored in one fixed mixed order: the first 10 test samples are not 5+5 classes
    assert len(set(raw.test_y[:10].tolist())) > 2
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = load_dataset("cifar10-jpeg", [tmp_path])  # from the cache
    assert torch.equal(again.train_x, raw.train_x)


def test_offline_download_fails_with_one_line(monkeypatch):
    monkeypatch.setenv("BPFREE_NO_DOWNLOAD", "1")
    with pytest.raises(DatasetUnavailable, match="cifar10-jpeg"):
        load_dataset("cifar10")


def test_splits_are_seeded_disjoint_and_normalised_on_train_only():
    raw = load_dataset("digits")
    a = prepare_splits(raw, 0.2, seed=1)
    b = prepare_splits(raw, 0.2, seed=1)
    c = prepare_splits(raw, 0.2, seed=2)
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)
    assert len(a.train_y) + len(a.val_y) == len(raw.train_y)
    assert torch.equal(a.test_y, c.test_y)  # the test set never depends on the seed
    assert abs(a.train_x.mean().item()) < 1e-5 and abs(a.train_x.std().item() - 1) < 1e-2
    assert abs(a.test_x.mean().item()) > 1e-4  # test statistics were not used
    limited = prepare_splits(raw, 0.2, seed=1, train_limit=100, test_limit=50)
    assert len(limited.train_y) == 100 and len(limited.test_y) == 50
    # A limit never changes which samples validate (their normalisation follows the smaller train set).
    denorm = lambda s: s.val_x * s.std[0] + s.mean[0]  # noqa: E731
    assert torch.equal(limited.val_y, a.val_y) and torch.allclose(denorm(limited), denorm(a), atol=1e-5)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10


def test_tabular_normalisation_is_per_feature():
    s = prepare_splits(load_dataset("breast_cancer"), 0.1, seed=0)
    assert s.train_x.shape[1] == 30 and len(s.mean) == 30
    assert torch.allclose(s.train_x.mean(0), torch.zeros(30), atol=1e-4)


def test_registry_lists_the_issue_datasets():
    for name in ("digits", "breast_cancer", "mnist", "fmnist", "cifar10", "cifar100", "cifar10-jpeg"):
        assert name in DATASETS
