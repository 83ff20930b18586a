"""The "imagefolder" dataset: a user's own PNGs, written by the tests (3 classes x 6 images)."""
import os

import pytest
import torch

from branchy_engine import data
from branchy_engine.data import DatasetFormatError, DatasetNotFoundError

from fake_data import write_image_folder, write_fashion_mnist

CLASSES = ["cat", "dog", "eel"]


def load(root, **kw):
    return data.load("imagefolder", data_dir=str(root), **kw)


def test_class_folders_alone_are_split_three_ways(tmp_path):
    d = load(write_image_folder(tmp_path), val_fraction=0.2)
    assert d.class_names == CLASSES and d.num_classes == 3
    assert (len(d.train), len(d.val), len(d.test)) == (11, 3, 4)  # test: 0.2 * 18, val: 0.2 * 14
    assert d.input_shape == (3, 20, 20) and d.train.images.dtype == torch.uint8
    assert len(d.mean) == len(d.std) == 3
    everything = torch.cat([d.train.images, d.val.images, d.test.images])
    assert len(everything.unique(dim=0)) == 18  # no image in two splits
    # the rows each class lights survive reading: the label is in the picture
    for images, labels in ((d.train.images, d.train.labels), (d.test.images, d.test.labels)):
        for image, label in zip(images, labels):
            assert int(image[0, 5 * int(label) + 3].float().mean()) == 220


@pytest.mark.parametrize("splits, sizes", [
    (("train", "val", "test"), (6 * 3, 6 * 3, 6 * 3)),      # all three as given
    (("train", "test"), (16, 2, 18)),                      # validation carved out of train
    (("train", "val"), (16, 2, 18)),                       # ImageNet's layout: val is the test split
    (("train",), (14, 2, 2)),                              # train alone: split three ways
])
def test_split_layouts(tmp_path, splits, sizes):
    d = load(write_image_folder(tmp_path, splits=splits), val_fraction=0.1)
    assert (len(d.train), len(d.val), len(d.test)) == sizes
    assert d.class_names == CLASSES


def test_input_size_resizes_and_one_channel_reads_grey(tmp_path):
    root = write_image_folder(tmp_path)
    d = load(root, input_size=32, channels=1, limit=5)
    assert d.input_shape == (1, 32, 32) and len(d.train) == 5 and "1x32x32" in d.description
    assert len(d.mean) == 1


def test_grey_datasets_are_resized_and_repeated_for_three_channel_networks(tmp_path):
    root = write_fashion_mnist(tmp_path, n_train=40, n_test=10)
    plain = data.load("fashion-mnist", data_dir=root)
    d = data.load("fashion-mnist", data_dir=root, input_size=32, channels=3, limit=8)
    assert d.input_shape == (3, 32, 32) and d.mean == (0.0,) * 3 and d.std == (1.0,) * 3
    assert torch.equal(d.train.images[:, 0], d.train.images[:, 2])
    assert torch.equal(d.train.images[:, :1], data.resize(plain.train.images[:8], 32))
    with pytest.raises(ValueError, match="has 1-channel images; the network takes 2"):
        data.load("fashion-mnist", data_dir=root, channels=2)


def test_bad_folders_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="needs --data-dir"):
        data.load("imagefolder")
    with pytest.raises(DatasetNotFoundError, match="no such image folder"):
        load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="find any class folder.*expected DIR/train/CLASS"):
        load(tmp_path / "empty")
    no_images = tmp_path / "no_images"
    (no_images / "cat").mkdir(parents=True)
    (no_images / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetFormatError, match="no valid file for the classes cat"):
        load(no_images)

    broken = write_image_folder(tmp_path / "broken")
    bad = os.path.join(broken, "dog", "3.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG not really")
    with pytest.raises(DatasetFormatError, match=f"{bad}: not a readable image"):
        load(broken)

    mixed = write_image_folder(tmp_path / "mixed")
    write_image_folder(tmp_path / "mixed", classes=("dog",), per_class=1, size=24, seed=1)
    with pytest.raises(DatasetFormatError, match="differ in size.*is 24x24.*--input-size"):
        load(mixed)
    assert load(mixed, input_size=16).input_shape == (3, 16, 16)

    other = write_image_folder(tmp_path / "other", splits=("train",))
    write_image_folder(tmp_path / "other", splits=("test",), classes=("cat", "dog"))
    with pytest.raises(DatasetFormatError, match=r"test has classes \['cat', 'dog'\].*same class"):
        load(other)
    orphan = write_image_folder(tmp_path / "orphan", splits=("test",))
    with pytest.raises(DatasetFormatError, match="no train folder"):
        load(orphan)
