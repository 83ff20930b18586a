"""Dataset loading: the tests write small IDX and CIFAR files into tmp_path; nothing downloads."""
import gzip
import os
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from branchy_engine import data
from fake_data import idx_bytes
from branchy_engine.data import (DATASETS, DatasetFormatError, DatasetNotFoundError, IDX_FILES,
                                 IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, load, read_idx)

N_TRAIN, N_TEST = 50, 20


@pytest.fixture(autouse=True)
def no_default_data_dir(tmp_path, monkeypatch):
    """Keeps the user's cache out of every test: load() looks there when no data_dir is given."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def make_idx(directory, compressed=True, seed=0, n_train=N_TRAIN, n_test=N_TEST):
    """Writes the four IDX files into `directory` -> the arrays written, by file name."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    os.makedirs(directory, exist_ok=True)
    for name, array in arrays.items():
        raw = idx_bytes(array)
        path = os.path.join(directory, name + (".gz" if compressed else ""))
        with open(path, "wb") as f:
            f.write(gzip.compress(raw) if compressed else raw)
    return arrays


def make_cifar(root, n_per_batch=10, n_test=N_TEST, meta=True):
    """Writes CIFAR-10 python batches into root/cifar-10-batches-py -> (train data, labels, test
    data, labels) as numpy arrays, data [N, 3072]."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in data.CIFAR10_FILES:
        n = n_test if name == "test_batch" else n_per_batch
        written[name] = (rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         rng.integers(0, 10, n).tolist())
        with open(folder / name, "wb") as f:
            # Protocol 2, like the original Python 2 files; keys are bytes there too.
            pickle.dump({b"data": written[name][0], b"labels": written[name][1]}, f, protocol=2)
    if meta:
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, f)
    train = [written[f"data_batch_{i}"] for i in range(1, 6)]
    return (np.concatenate([d for d, _ in train]), np.concatenate([l for _, l in train]),
            *written["test_batch"])


def all_samples(split):
    """The (image bytes, label) pairs of a split, as a sorted list: compares splits as multisets."""
    return sorted((img.numpy().tobytes(), int(lbl)) for img, lbl in zip(split.images, split.labels))


@pytest.mark.parametrize("compressed", [True, False])
def test_flat_layout_round_trip(tmp_path, compressed):
    arrays = make_idx(tmp_path, compressed=compressed)
    ds = load("fashion-mnist", data_dir=str(tmp_path), val_fraction=0.0)
    assert ds.name == "fashion-mnist" and not ds.stand_in
    assert ds.num_classes == 10 and ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.input_shape == (1, 28, 28) and ds.mean == (0.0,) and ds.std == (1.0,)
    # val_fraction 0: train is the training file, in file order.
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert torch.equal(ds.train.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(ds.train.labels, torch.from_numpy(arrays["train-labels-idx1-ubyte"]).long())
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert torch.equal(ds.test.labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    assert len(ds.val) == 0 and ds.val.images.shape == (0, 1, 28, 28)


def test_torchvision_layout_and_mnist(tmp_path):
    fashion = make_idx(tmp_path / "FashionMNIST" / "raw", seed=1)
    digits = make_idx(tmp_path / "MNIST" / "raw", compressed=False, seed=2)
    ds = load("fashion-mnist", data_dir=str(tmp_path), val_fraction=0.0)
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(fashion["t10k-images-idx3-ubyte"]))
    mnist = load("mnist", data_dir=str(tmp_path), val_fraction=0.0)
    assert mnist.class_names == [str(d) for d in range(10)] and mnist.mean == (0.0,)
    assert torch.equal(mnist.test.images[:, 0], torch.from_numpy(digits["t10k-images-idx3-ubyte"]))


def test_mnist_is_not_read_from_a_flat_directory(tmp_path):
    # The file names are Fashion-MNIST's too: only the MNIST/ folder says which dataset it is.
    make_idx(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="MNIST/raw"):
        load("mnist", data_dir=str(tmp_path))


def test_batch_returns_raw_samples(tmp_path):
    make_idx(tmp_path)
    ds = load("fashion-mnist", data_dir=str(tmp_path))
    index = torch.tensor([3, 0, 3])
    images, labels = ds.train.batch(index)
    assert images.shape == (3, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(images, ds.train.images[index]) and torch.equal(labels, ds.train.labels[index])


def test_val_split(tmp_path):
    make_idx(tmp_path, n_train=200)
    full = load("fashion-mnist", data_dir=str(tmp_path), val_fraction=0.0)
    whole = full.train
    a = load("fashion-mnist", data_dir=str(tmp_path), val_fraction=0.25, seed=7)
    b = load("fashion-mnist", data_dir=str(tmp_path), val_fraction=0.25, seed=7)
    c = load("fashion-mnist", data_dir=str(tmp_path), val_fraction=0.25, seed=8)
    assert (len(a.train), len(a.val)) == (150, 50)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.val.images, c.val.images)
    # Disjoint, and together exactly the training file (random images never repeat).
    assert not set(all_samples(a.train)) & set(all_samples(a.val))
    assert sorted(all_samples(a.train) + all_samples(a.val)) == all_samples(whole)
    assert torch.equal(a.test.images, full.test.images)  # the test set is untouched


def test_val_fraction_rounds(tmp_path):
    make_idx(tmp_path, n_train=30)
    ds = load("fashion-mnist", data_dir=str(tmp_path), val_fraction=0.1)
    assert (len(ds.train), len(ds.val)) == (27, 3)


@pytest.mark.parametrize("val_fraction", [-0.1, 1.0, 1.5])
def test_bad_val_fraction(tmp_path, val_fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        load("fashion-mnist", data_dir=str(tmp_path), val_fraction=val_fraction)


def test_limit(tmp_path):
    make_idx(tmp_path)
    full = load("fashion-mnist", data_dir=str(tmp_path), val_fraction=0.2)
    small = load("fashion-mnist", data_dir=str(tmp_path), val_fraction=0.2, limit=7)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(small, name).images, getattr(full, name).images[:7])
        assert torch.equal(getattr(small, name).labels, getattr(full, name).labels[:7])
    with pytest.raises(ValueError, match="limit"):
        load("fashion-mnist", data_dir=str(tmp_path), limit=0)


def test_prepare_mnist_family_is_pixels_over_255(tmp_path):
    make_idx(tmp_path)
    ds = load("fashion-mnist", data_dir=str(tmp_path))
    images = ds.train.images[:8]
    x = ds.prepare(images)
    assert x.dtype == torch.float32 and x.shape == images.shape
    assert 0.0 <= x.min() and x.max() <= 1.0
    torch.testing.assert_close(x, images.float() / 255)
    assert images.dtype == torch.uint8  # the input is not modified
    with pytest.raises(ValueError, match=r"uint8 \[B, 1, H, W\]"):
        ds.prepare(images.float())


def test_fashion_mnist_32x3_stand_in(tmp_path):
    arrays = make_idx(tmp_path)
    ds = load("fashion-mnist-32x3", data_dir=str(tmp_path), val_fraction=0.0)
    assert ds.stand_in and "stand-in for CIFAR-10" in ds.description
    assert ds.input_shape == (3, 32, 32) and ds.train.images.shape == (N_TRAIN, 3, 32, 32)
    assert ds.class_names[0] == "T-shirt/top"
    images = ds.train.images
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    assert torch.equal(images[:, 0, 2:30, 2:30], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert not images[:, :, border].any()
    # CIFAR-style per-channel normalisation: the training split comes out with mean 0, std 1.
    assert len(ds.mean) == 3 and ds.mean[0] > 0 and ds.std[0] > 0
    x = ds.prepare(images)
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-4, rtol=0)


def test_cifar10(tmp_path):
    train_data, train_labels, test_data, test_labels = make_cifar(tmp_path)
    ds = load("cifar10", data_dir=str(tmp_path), val_fraction=0.0)
    assert ds.input_shape == (3, 32, 32) and not ds.stand_in
    assert ds.class_names == [f"class{i}" for i in range(10)]  # from batches.meta
    assert len(ds.train) == 50 and len(ds.test) == N_TEST
    # The 3072 bytes are the R, G and B planes of a 32x32 image, row by row.
    assert torch.equal(ds.train.images, torch.from_numpy(train_data).reshape(-1, 3, 32, 32))
    assert ds.train.images[4, 1, 0, 5] == train_data[4, 1024 + 5]
    assert ds.train.labels.tolist() == list(train_labels) and ds.test.labels.tolist() == test_labels
    pixels = ds.train.images.double() / 255
    torch.testing.assert_close(torch.tensor(ds.mean, dtype=torch.float64), pixels.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(torch.tensor(ds.std, dtype=torch.float64),
                               pixels.std(dim=(0, 2, 3), correction=0))


def test_cifar10_mean_std_come_from_the_train_split_only(tmp_path):
    make_cifar(tmp_path)
    ds = load("cifar10", data_dir=str(tmp_path), val_fraction=0.3, limit=5)
    assert len(ds.train) == 5
    full = load("cifar10", data_dir=str(tmp_path), val_fraction=0.3)
    assert ds.mean == full.mean  # limit does not change the normalisation
    train_mean = full.train.images.double().mean(dim=(0, 2, 3)) / 255
    torch.testing.assert_close(torch.tensor(ds.mean, dtype=torch.float64), train_mean)
    assert load("cifar10", data_dir=str(tmp_path), val_fraction=0.0).mean != ds.mean  # val left out


def test_cifar10_without_meta_uses_the_standard_names(tmp_path):
    make_cifar(tmp_path, meta=False)
    assert load("cifar10", data_dir=str(tmp_path)).class_names[0] == "airplane"


def test_cifar10_refuses_pickles_that_would_run_code(tmp_path):
    make_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DatasetFormatError, match="test_batch.*refusing"):
        load("cifar10", data_dir=str(tmp_path))


def test_cifar10_bad_batch(tmp_path):
    make_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DatasetFormatError, match="data_batch_3: not a CIFAR-10 python batch"):
        load("cifar10", data_dir=str(tmp_path))
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4})[:-20])
    with pytest.raises(DatasetFormatError, match="data_batch_3: cannot unpickle"):
        load("cifar10", data_dir=str(tmp_path))


def test_cifar10_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load("cifar10", data_dir=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "data_batch_1" in message
    assert "--data-dir" in message and "--download" in message and "fashion-mnist-32x3" in message
    assert isinstance(info.value, FileNotFoundError)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load("fashion-mnist", data_dir=str(tmp_path))
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir" in message and "--download" in message
    assert "train-images-idx3-ubyte[.gz]" in message
    assert str(tmp_path) in message and os.path.join(str(tmp_path), "FashionMNIST", "raw") in message


def test_mnist_missing_names_the_files_and_place(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load("mnist", data_dir=str(tmp_path))
    message = str(info.value)
    assert os.path.join(str(tmp_path), "MNIST", "raw") in message
    assert all(f"{name}[.gz]" in message for name in IDX_FILES)


def test_download_only_when_asked(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeFashionMNIST:
        """Stands in for torchvision's class: 'downloads' by writing the files where it would."""
        def __init__(self, root, download=False):
            calls.append((root, download))
            make_idx(os.path.join(root, "FashionMNIST", "raw"))

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    with pytest.raises(DatasetNotFoundError):
        load("fashion-mnist", data_dir=str(tmp_path))
    assert calls == []
    ds = load("fashion-mnist", data_dir=str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True)] and len(ds.test) == N_TEST
    load("fashion-mnist", data_dir=str(tmp_path), download=True)  # found now: no second download
    assert len(calls) == 1


def test_failed_download_says_how_to_get_it(tmp_path, monkeypatch):
    import torchvision.datasets

    def unreachable(root, download=False):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", unreachable)
    with pytest.raises(DatasetNotFoundError, match=r"download into .* failed .*Error downloading"):
        load("mnist", data_dir=str(tmp_path), download=True)


def write_idx_file(path, raw):
    with open(path, "wb") as f:
        f.write(raw)


def test_idx_bad_magic(tmp_path):
    make_idx(tmp_path, compressed=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[3] = 0x03  # an images magic number on a labels file
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetFormatError, match=r"train-labels-idx1-ubyte: not an IDX file.*2049"):
        load("fashion-mnist", data_dir=str(tmp_path))


@pytest.mark.parametrize("cut", [5, 16 + 28 * 28 + 3])
def test_idx_truncated(tmp_path, cut):
    make_idx(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:cut]))
    with pytest.raises(DatasetFormatError, match=r"t10k-images-idx3-ubyte.gz: truncated IDX file"):
        load("fashion-mnist", data_dir=str(tmp_path))


def test_idx_truncated_gzip_stream(tmp_path):
    make_idx(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetFormatError, match=r"train-images-idx3-ubyte.gz: cannot read"):
        load("fashion-mnist", data_dir=str(tmp_path))


def test_idx_checks_dims_and_labels(tmp_path):
    path = str(tmp_path / "x")
    write_idx_file(path, idx_bytes(np.zeros((2, 3), np.uint8)))
    with pytest.raises(DatasetFormatError, match="magic number 0x00000802"):
        read_idx(path, IDX_IMAGES_MAGIC)
    write_idx_file(path, idx_bytes(np.zeros(4, np.uint8)) + b"\0")
    with pytest.raises(DatasetFormatError, match="oversized"):
        read_idx(path, IDX_LABELS_MAGIC)

    make_idx(tmp_path, compressed=False)
    write_idx_file(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.full(N_TEST - 1, 3, np.uint8)))
    with pytest.raises(DatasetFormatError, match=f"has {N_TEST - 1} labels but .* has {N_TEST} images"):
        load("fashion-mnist", data_dir=str(tmp_path))
    write_idx_file(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.full(N_TEST, 10, np.uint8)))
    with pytest.raises(DatasetFormatError, match=r"t10k-labels-idx1-ubyte: labels must be in 0..9"):
        load("fashion-mnist", data_dir=str(tmp_path))
    write_idx_file(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((N_TEST, 32, 32), np.uint8)))
    with pytest.raises(DatasetFormatError, match=r"t10k-images-idx3-ubyte: images are \[32, 32\]"):
        load("fashion-mnist", data_dir=str(tmp_path))


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError) as info:
        load("imagenet")
    assert "imagenet" in str(info.value) and all(name in str(info.value) for name in DATASETS)


def test_engine_samples_are_the_test_split_prepared_as_the_model_file_records(tmp_path):
    arrays = make_idx(tmp_path)
    # What engine_samples reads of an Engine: the model file's metadata and the input shape.
    engine = SimpleNamespace(metadata={"dataset": {"name": "fashion-mnist", "mean": [0.25], "std": [0.5]}},
                             input_shape=(1, 28, 28))
    x, labels = data.engine_samples(engine, limit=5, data_dir=str(tmp_path))
    images = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][:5]).float().unsqueeze(1)
    assert x.dtype == torch.float32 and x.shape == (5, 1, 28, 28) and x.is_contiguous()
    torch.testing.assert_close(x, (images / 255 - 0.25) / 0.5)
    assert labels.tolist() == arrays["t10k-labels-idx1-ubyte"][:5].tolist()


@pytest.mark.skipif(not os.path.isdir(data.DEBIAN_FASHION_MNIST_DIR),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_debian_fashion_mnist():
    ds = load("fashion-mnist")
    assert len(ds.train) + len(ds.val) == 60000 and len(ds.test) == 10000
    assert (len(ds.train), len(ds.val)) == (54000, 6000)
    assert ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert sorted(torch.bincount(ds.test.labels).tolist()) == [1000] * 10  # balanced test set
