"""Image classification datasets held in memory as uint8 tensors, with a fixed validation split.

    ds = load("fashion-mnist")                      # Debian's dataset-fashion-mnist, no download
    images, labels = ds.train.batch(index)          # uint8 [B, C, H, W], int64 [B]
    x = ds.prepare(images.to(device))               # float32 [B, C, H, W], normalised

Images stay uint8 until `prepare`, so a whole split costs one byte per pixel and the conversion to
float runs on whatever device the batch is on. The validation split is carved out of the training
set (never the test set) by a permutation fixed by `seed`, so threshold calibration on `val` and
the final numbers on `test` never see the same images.

The files are read here (IDX for MNIST and Fashion-MNIST, the python pickles for CIFAR-10):
torchvision is needed only for `download=True`, for "imagefolder" (a user's own images, read by
image_folder.py) and for resizing (`input_size`).
"""
import gzip
import os
import pickle
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

DATASETS = ("fashion-mnist", "mnist", "cifar10", "fashion-mnist-32x3", "imagefolder")

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MNIST_CLASSES = [str(digit) for digit in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are in none of the places looked at; the message says how to get them."""


class DatasetFormatError(ValueError):
    """A dataset file exists but is corrupt, truncated or of the wrong kind; the message names it."""


@dataclass
class Split:
    """One split held in memory.

    images: uint8 [N, C, H, W], raw pixel values 0..255.
    labels: int64 [N], class indices.
    """
    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} "
                             f"{list(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 [N] with N = {self.images.shape[0]}, got "
                             f"{self.labels.dtype} {list(self.labels.shape)}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at `index` (int64 [B]): raw images uint8 [B, C, H, W] and labels int64 [B]."""
        return self.images[index], self.labels[index]


@dataclass
class Dataset:
    """A dataset split three ways, with the normalisation its networks expect.

    input_shape is (C, H, W) of one image as the network sees it. mean and std have one entry per
    channel and apply to pixels already divided by 255 (mean 0, std 1 for the MNIST family: the
    authors fed MNIST as pixels / 255).
    """
    name: str
    description: str
    stand_in: bool
    num_classes: int
    class_names: list[str]
    input_shape: tuple[int, int, int]
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def prepare(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """Raw images uint8 [B, C, H, W] -> float32 [B, C, H, W], (x / 255 - mean) / std per channel.

        Runs on the device the images are on; mean and std enter as Python scalars so that no
        tensor is copied to the device per batch.
        """
        if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4 \
                or images_uint8.shape[1] != self.input_shape[0]:
            raise ValueError(f"images must be uint8 [B, {self.input_shape[0]}, H, W], got "
                             f"{images_uint8.dtype} {list(images_uint8.shape)}")
        x = images_uint8.to(torch.float32).div_(255.0)
        for c, (mean, std) in enumerate(zip(self.mean, self.std)):
            x[:, c].sub_(mean).div_(std)
        return x


def load(name: str, data_dir: str | None = None, val_fraction: float = 0.1, seed: int = 0,
         download: bool = False, limit: int | None = None, input_size: int | None = None,
         channels: int | None = None) -> Dataset:
    """Reads dataset `name` (one of DATASETS) into memory and splits it into train, val and test.

    data_dir: where the files are. Fashion-MNIST: the four IDX files (gzipped or not) directly in
        data_dir or in data_dir/FashionMNIST/raw/; MNIST: data_dir/MNIST/raw/; CIFAR-10:
        data_dir/cifar-10-batches-py/; imagefolder: see image_folder.LAYOUT. None: Fashion-MNIST
        from /usr/share/datasets/fashion-mnist, then default_data_dir() for all of them but
        imagefolder, which needs a data_dir.
    val_fraction: in [0, 1); round(val_fraction * N) samples of the N training samples, chosen by a
        permutation from `seed`, become `val`; the test set is never touched. Both splits keep
        the order of the files.
    download: where the files are missing, let torchvision download them into data_dir (or
        default_data_dir()); without it a missing dataset raises DatasetNotFoundError.
    limit: keep only the first `limit` samples of each split (for quick runs). The CIFAR-style
        mean/std are computed before it, so a limited run normalises as a full run does.
    input_size: N resizes every image to N x N (bilinear, antialiased, back to uint8; after
        `limit`, and after the mean/std, which resizing barely changes); None keeps the files'
        size.
    channels: what the network takes: 3 repeats a grey dataset's channel three times (a
        torchvision model on Fashion-MNIST); None, or the data's own count, keeps the data as
        it is; another count is an error. An image folder is read as RGB unless it is 1.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples or None, got {limit}")
    if input_size is not None and input_size < 1:
        raise ValueError(f"input_size must be a positive number of pixels or None, got {input_size}")

    if name == "imagefolder":
        from branchy_engine import image_folder
        folder = image_folder.read(data_dir, input_size, channels, val_fraction, seed)
        return _finish(name, folder.description, False, folder.class_names, folder.train,
                       folder.val, folder.test, limit, input_size, channels)
    if name == "cifar10":
        train, test, class_names = _read_cifar10(data_dir, download)
        description = "CIFAR-10: 32x32 colour images, 10 classes"
    elif name == "mnist":
        train, test = _read_idx_dataset(_MNIST, data_dir, download)
        class_names = MNIST_CLASSES
        description = "MNIST: 28x28 grey handwritten digits, 10 classes"
    else:
        train, test = _read_idx_dataset(_FASHION_MNIST, data_dir, download)
        class_names = FASHION_MNIST_CLASSES
        description = "Fashion-MNIST: 28x28 grey images of clothing, 10 classes"
    stand_in = name == "fashion-mnist-32x3"
    if stand_in:
        train, test = _pad_to_32x32x3(train), _pad_to_32x32x3(test)
        description = ("Fashion-MNIST padded to 32x32 and repeated to 3 channels: a stand-in for "
                       "CIFAR-10 that runs the CIFAR-shaped networks where CIFAR-10 is absent; "
                       "its accuracies are not CIFAR-10 accuracies")

    train, val = _split_off_val(train, val_fraction, seed)
    return _finish(name, description, stand_in, class_names, train, val, test, limit, input_size,
                   channels)


def _finish(name, description, stand_in, class_names, train, val, test, limit, input_size,
            channels) -> Dataset:
    """The Dataset of three splits: normalisation, then `limit`, `input_size` and `channels`."""
    if name in ("mnist", "fashion-mnist"):
        mean, std = (0.0,), (1.0,)  # pixels / 255, as the authors fed MNIST
    else:
        mean, std = _channel_mean_std(train.images)
    have = train.images.shape[1]
    if channels is not None and channels != have and not (have == 1 and channels == 3):
        raise ValueError(f"{name} has {have}-channel images; the network takes {channels} channels")
    repeat = 3 if channels == 3 and have == 1 else 1
    splits = []
    for s in (train, val, test):
        if limit is not None:
            s = Split(s.images[:limit], s.labels[:limit])
        images = resize(s.images, input_size) if input_size is not None else s.images
        splits.append(Split(images.repeat(1, repeat, 1, 1) if repeat > 1 else images, s.labels))
    train, val, test = splits
    if input_size is not None or repeat > 1:
        c, h, w = train.images.shape[1:]
        description += f", as {c}x{h}x{w}"
    description += f" ({len(train)} train / {len(val)} val / {len(test)} test samples)"
    return Dataset(name=name, description=description, stand_in=stand_in,
                   num_classes=len(class_names), class_names=list(class_names),
                   input_shape=tuple(train.images.shape[1:]), train=train, val=val, test=test,
                   mean=mean * repeat, std=std * repeat)


def resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size], bilinear and antialiased (torchvision's
    resize), `chunk` images at a time so that no float copy of a whole split is made."""
    from torchvision.transforms.v2.functional import resize as tv_resize
    if images.shape[-2:] == (size, size):
        return images
    if len(images) == 0:
        return images.new_empty(0, images.shape[1], size, size)
    return torch.cat([tv_resize(part, [size, size], antialias=True) for part in images.split(chunk)])


def model_samples(metadata: dict, input_shape, name: str | None = None, data_dir: str | None = None,
                  split: str = "test", limit: int | None = None):
    """A split prepared as an exported model's training data was: (x float32 [N, C, H, W],
    labels int64 [N], Dataset). `metadata` is the model file's (Engine.metadata): it names the
    dataset (unless `name` does), the normalisation and the validation split of training."""
    record = metadata.get("dataset") or {}
    name = name or record.get("name")
    if not name:
        raise ValueError("the model file records no dataset; name one (--data)")
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    rule = metadata.get("split") or {}  # the training run's validation split, to rebuild it
    fraction, seed = rule.get("val_fraction"), rule.get("seed")
    # Resized and given channels as in training (recorded since 2026-12; before, from the shape).
    c, h, w = input_shape
    size = record.get("input_size", h if h == w and name == "imagefolder" else None)
    channels = record.get("channels", c if name == "imagefolder" else None)
    d = load(name, data_dir=data_dir, val_fraction=0.1 if fraction is None else fraction,
             seed=0 if seed is None else seed, limit=limit, input_size=size, channels=channels)
    if tuple(d.input_shape) != tuple(input_shape):
        raise ValueError(f"{name} gives inputs {list(d.input_shape)}, the model takes {list(input_shape)}")
    if record.get("mean") is not None:  # exactly the training run's normalisation
        d.mean, d.std = tuple(record["mean"]), tuple(record["std"])
    part = d.val if split == "val" else d.test
    images, labels = part.batch(torch.arange(len(part)))
    return d.prepare(images).contiguous(), labels, d


def engine_samples(engine, split: str = "test", limit: int | None = None,
                   data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `limit` samples (default: all) of a split of the data `engine`'s model was
    trained on, prepared as training prepared them: (x float32 [N, C, H, W], labels int64 [N]).
    What benchmarks and tests feed an Engine; `engine` is a branchy_engine.Engine (its model file
    records the dataset and normalisation). Raises as model_samples does."""
    x, labels, _ = model_samples(engine.metadata, engine.input_shape, data_dir=data_dir,
                                 split=split, limit=limit)
    return x, labels


def default_data_dir() -> str:
    """Where downloads go when no data_dir is given: $XDG_CACHE_HOME/branchy-engine/data
    (~/.cache/branchy-engine/data). load() also looks there when no data_dir is given."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "branchy-engine", "data")


def read_idx(path: str, magic: int) -> torch.Tensor:
    """Reads one IDX file of unsigned bytes (gzipped if `path` ends in .gz) -> uint8 tensor.

    magic: IDX_LABELS_MAGIC (result [N]) or IDX_IMAGES_MAGIC (result [N, H, W]). The magic number,
    the big-endian dimensions and the file length are checked; any mismatch raises
    DatasetFormatError naming the file.
    """
    raw = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated IDX file, {len(raw)} bytes is shorter than "
                                 f"the {header}-byte header")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise DatasetFormatError(f"{path}: not an IDX file of this kind: magic number {found:#010x}, "
                                 f"expected {magic:#010x} ({magic})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DatasetFormatError(f"{path}: {'truncated' if len(raw) < expected else 'oversized'} "
                                 f"IDX file: dimensions {list(dims)} need {expected} bytes, "
                                 f"the file has {len(raw)}")
    # Copy: a tensor over the read-only bytes object would be unwritable.
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy())


def _read_bytes(path: str) -> bytes:
    """The content of `path`, decompressed when it ends in .gz; errors name the file."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:
        # A truncated .gz raises EOFError, a damaged one BadGzipFile (an OSError) or zlib.error.
        raise DatasetFormatError(f"{path}: cannot read ({exc})") from exc


@dataclass(frozen=True)
class _IdxSource:
    """Where the IDX files of one dataset may be and how to get them."""
    title: str
    torchvision_name: str  # the torchvision.datasets class, and its folder under the root
    flat_ok: bool          # whether data_dir itself may hold the files (Debian's layout)
    system_dir: str | None
    how_to_get: str


_FASHION_MNIST = _IdxSource(
    title="Fashion-MNIST", torchvision_name="FashionMNIST", flat_ok=True,
    system_dir=DEBIAN_FASHION_MNIST_DIR,
    how_to_get=("install it with `apt-get install dataset-fashion-mnist` (files in "
                f"{DEBIAN_FASHION_MNIST_DIR}/), or pass --data-dir DIR with the four IDX files in "
                "DIR or DIR/FashionMNIST/raw/, or pass --download where the network is reachable"))
# MNIST and Fashion-MNIST files have the same names, so MNIST is read only from torchvision's
# layout, where the folder name says which is which.
_MNIST = _IdxSource(
    title="MNIST", torchvision_name="MNIST", flat_ok=False, system_dir=None,
    how_to_get=("pass --data-dir DIR with the four IDX files in DIR/MNIST/raw/ (torchvision's "
                "layout), or pass --download where the network is reachable"))


def _read_idx_dataset(source: _IdxSource, data_dir: str | None, download: bool):
    """Finds and reads the four IDX files of `source` -> (train Split, test Split), [N, 1, 28, 28]."""
    def places(root):
        raw = os.path.join(root, source.torchvision_name, "raw")
        return [root, raw] if source.flat_ok else [raw]

    if data_dir is not None:
        dirs = places(data_dir)
    else:
        dirs = ([source.system_dir] if source.system_dir else []) + places(default_data_dir())
    files = _find_idx_files(dirs)
    if files is None and download:
        root = _download(source.torchvision_name, source.title, data_dir, source.how_to_get)
        files = _find_idx_files(places(root))
    if files is None:
        looked_for = ", ".join(f"{name}[.gz]" for name in IDX_FILES)
        raise DatasetNotFoundError(f"{source.title} not found: looked for {looked_for} in "
                                   f"{', '.join(dirs)}. To get it: {source.how_to_get}.")
    splits = []
    for images_file, labels_file in (files[:2], files[2:]):
        images = read_idx(images_file, IDX_IMAGES_MAGIC)
        labels = read_idx(labels_file, IDX_LABELS_MAGIC)
        if images.shape[1:] != (28, 28):
            raise DatasetFormatError(f"{images_file}: images are {list(images.shape[1:])}, "
                                     f"{source.title} images are 28x28")
        if labels.shape[0] != images.shape[0]:
            raise DatasetFormatError(f"{labels_file} has {labels.shape[0]} labels but "
                                     f"{images_file} has {images.shape[0]} images")
        splits.append(Split(images.unsqueeze(1), _checked_labels(labels.long(), labels_file)))
    return splits[0], splits[1]


def _find_idx_files(dirs: list[str]) -> list[str] | None:
    """Paths of IDX_FILES in the first of `dirs` that holds all four, each uncompressed (faster to
    read; torchvision keeps both) or else .gz; None where no directory holds all four."""
    for directory in dirs:
        paths = []
        for name in IDX_FILES:
            candidates = [os.path.join(directory, name + ext) for ext in ("", ".gz")]
            paths.append(next((p for p in candidates if os.path.isfile(p)), None))
        if None not in paths:
            return paths
    return None


def _download(torchvision_name: str, title: str, data_dir: str | None, how_to_get: str) -> str:
    """Lets torchvision.datasets.<torchvision_name> download into data_dir (or default_data_dir());
    returns that root."""
    import torchvision.datasets  # only here: reading the files needs no torchvision

    root = data_dir if data_dir is not None else default_data_dir()
    try:
        getattr(torchvision.datasets, torchvision_name)(root, download=True)
    except Exception as exc:  # no network raises URLError, RuntimeError or OSError, by mirror
        raise DatasetNotFoundError(f"{title}: download into {root} failed ({exc}). "
                                   f"To get it: {how_to_get}.") from exc
    return root


def _read_cifar10(data_dir: str | None, download: bool):
    """Reads the CIFAR-10 python batches -> (train Split, test Split), [N, 3, 32, 32], class names."""
    how_to_get = ("pass --data-dir DIR with the python version of CIFAR-10 unpacked in "
                  f"DIR/{CIFAR10_FOLDER}/ (torchvision's layout), or pass --download where the "
                  "network is reachable; where CIFAR-10 cannot be had, the dataset "
                  "'fashion-mnist-32x3' runs the same networks on Fashion-MNIST as a stand-in")
    folder = os.path.join(data_dir if data_dir is not None else default_data_dir(), CIFAR10_FOLDER)
    missing = [name for name in CIFAR10_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing and download:
        folder = os.path.join(_download("CIFAR10", "CIFAR-10", data_dir, how_to_get), CIFAR10_FOLDER)
        missing = [name for name in CIFAR10_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise DatasetNotFoundError(f"CIFAR-10 not found: looked for {', '.join(CIFAR10_FILES)} in "
                                   f"{folder}; missing {', '.join(missing)}. To get it: {how_to_get}.")

    batches = [_read_cifar10_batch(os.path.join(folder, name)) for name in CIFAR10_FILES]
    train = Split(torch.cat([b.images for b in batches[:5]]), torch.cat([b.labels for b in batches[:5]]))
    meta_path = os.path.join(folder, "batches.meta")
    class_names = CIFAR10_CLASSES
    if os.path.isfile(meta_path):
        meta = _unpickle(meta_path)
        names = meta.get(b"label_names") if isinstance(meta, dict) else None
        if not isinstance(names, list) or len(names) != len(CIFAR10_CLASSES):
            raise DatasetFormatError(f"{meta_path}: not CIFAR-10 metadata (a dict with "
                                     f"{len(CIFAR10_CLASSES)} b'label_names')")
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return train, batches[5], class_names


def _read_cifar10_batch(path: str) -> Split:
    """One CIFAR-10 python batch: b"data" uint8 [N, 3072] (R, G, B planes of 32x32), b"labels" [N]."""
    batch = _unpickle(path)
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32 or labels is None or len(labels) != data.shape[0]:
        raise DatasetFormatError(f"{path}: not a CIFAR-10 python batch (a dict with b'data' uint8 "
                                 "[N, 3072] and N b'labels')")
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return Split(images, _checked_labels(torch.as_tensor(np.asarray(labels, np.int64)), path))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a pickle may name any callable, and a
    data directory is no reason to run code from it."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("_codecs", "encode")}  # protocol-2 pickles from Python 3 store bytes this way

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: a dataset pickle holds only "
                                         "lists, dicts, bytes and numpy arrays")
        return super().find_class(module, name)


def _unpickle(path: str):
    """Loads a CIFAR-10 pickle (keys and strings as bytes); errors name the file."""
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DatasetFormatError(f"{path}: cannot unpickle ({exc})") from exc


def _checked_labels(labels: torch.Tensor, path: str, num_classes: int = 10) -> torch.Tensor:
    """labels (int64 [N]) unchanged, after checking that each is a class index; errors name `path`."""
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise DatasetFormatError(f"{path}: labels must be in 0..{num_classes - 1}, found "
                                 f"{int(labels.min())}..{int(labels.max())}")
    return labels


def _pad_to_32x32x3(split: Split) -> Split:
    """uint8 [N, 1, 28, 28] -> [N, 3, 32, 32]: 2 zero pixels on each side, the grey channel in all
    three, so the CIFAR-shaped networks take Fashion-MNIST unchanged."""
    n, _, h, w = split.images.shape
    images = torch.zeros(n, 3, h + 4, w + 4, dtype=torch.uint8)
    images[:, :, 2:-2, 2:-2] = split.images  # broadcasts the one channel over three
    return Split(images, split.labels)


def _split_off_val(train: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Moves round(val_fraction * N) training samples, chosen by a permutation from `seed`, into a
    validation split; both keep the file order. -> (train, val)."""
    n = len(train)
    n_val = round(val_fraction * n)
    if n_val == n:
        raise ValueError(f"val_fraction {val_fraction} of {n} training samples leaves none to train on")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_index, train_index = perm[:n_val].sort().values, perm[n_val:].sort().values
    return Split(*train.batch(train_index)), Split(*train.batch(val_index))


def _channel_mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 images [N, C, H, W], in units of pixel / 255.

    From a 256-bin histogram per channel: exact, and with no float copy of the images.
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        p = counts / counts.sum()
        mean = float((p * values).sum())
        means.append(mean)
        stds.append(float((p * (values - mean) ** 2).sum()) ** 0.5)
    return tuple(means), tuple(stds)
