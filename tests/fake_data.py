"""Small data files in the real formats, written by the tests themselves (nothing downloads)."""
import gzip
import os
import struct

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    """A uint8 array in IDX format: magic 0x0000080<ndim> (labels 2049, images 2051), big-endian
    dimensions, then the bytes."""
    header = struct.pack(f">I{array.ndim}I", 0x800 | array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path, array: np.ndarray):
    """Writes `array` as an IDX file, gzipped if the name ends in .gz."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(idx_bytes(array))


def learnable_images(labels: np.ndarray, rng: np.random.Generator, size=28) -> np.ndarray:
    """Images a small network can classify: class c lights a bar at row 2c+4, plus noise."""
    images = rng.integers(0, 60, size=(len(labels), size, size), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * int(c) + 4, 4:size - 4] = 220
    return images


def write_fashion_mnist(directory, n_train=600, n_test=200, seed=0, gz=True):
    """The four Fashion-MNIST files, in the flat layout the Debian package uses."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte{ext}"), learnable_images(labels, rng))
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte{ext}"), labels)
    return str(directory)


def write_image_folder(directory, splits=("",), classes=("cat", "dog", "eel"), per_class=6, size=20,
                       seed=0):
    """PNG images in class folders: directory/SPLIT/CLASS/i.png for each of `splits` ("" puts the
    class folders in `directory` itself). Class k lights rows 5k+2..5k+4, so they are learnable."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split in splits:
        for k, name in enumerate(classes):
            folder = os.path.join(directory, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                pixels[5 * k + 2:5 * k + 5] = 220
                Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))
    return str(directory)
