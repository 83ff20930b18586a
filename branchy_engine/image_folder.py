"""A user's own images as a dataset ("imagefolder"): class folders read into memory as uint8.

Files are found as torchvision.datasets.ImageFolder finds them (one folder per class, named by
the class, sorted; image extensions only) and decoded with PIL. Every image is read, converted to
RGB (or to grey where the network takes one channel), resized to input_size x input_size where
given, and kept as uint8 [C, H, W], so a folder must fit in memory as the other datasets do.
"""
import os
from dataclasses import dataclass

import numpy as np
import torch

from branchy_engine.data import (DatasetFormatError, DatasetNotFoundError, Split, _split_off_val,
                                 resize)

LAYOUT = ("DIR/train/CLASS/*.png (or .jpg, ...) with DIR/test/CLASS/ and/or DIR/val/CLASS/ beside "
          "it, the same class folders in each; or DIR/CLASS/* alone")
SPLITS = ("train", "val", "test")


@dataclass
class Folder:
    """What read() found: three splits, the class names (label i is class_names[i])."""
    train: Split
    val: Split
    test: Split
    class_names: list[str]
    description: str


def read(root: str | None, input_size: int | None, channels: int | None, val_fraction: float,
         seed: int) -> Folder:
    """Reads an image folder laid out as LAYOUT into three splits.

    DIR/train with DIR/val and DIR/test: the three splits as they are (val_fraction unused).
    DIR/train with DIR/test: validation is carved out of train by val_fraction and seed, as for
    the other datasets. DIR/train with DIR/val (ImageNet's layout): DIR/val is the test split and
    validation is carved out of train. DIR/train alone, or class folders directly in DIR: the
    images are split three ways: round(val_fraction * N) of them become the test split (a
    permutation from seed + 1), then validation is carved out of the rest.

    Images of different sizes need input_size. Raises DatasetNotFoundError for a missing folder,
    DatasetFormatError naming the folder or file for one without classes or images, an image
    that does not decode, class folders that differ between splits, or mixed sizes.
    """
    if root is None:
        raise ValueError(f"--dataset imagefolder needs --data-dir DIR, laid out as {LAYOUT}")
    if channels not in (None, 1, 3):
        raise ValueError(f"an image folder is read as RGB or grey; the network takes {channels} "
                         f"channels")
    if not os.path.isdir(root):
        raise DatasetNotFoundError(f"{root}: no such image folder (expected {LAYOUT})")
    found = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
    if "train" in found:
        parts = {s: _read_classes(os.path.join(root, s), input_size, channels) for s in found}
        train_classes = parts["train"][1]
        for s in found:
            if parts[s][1] != train_classes:
                raise DatasetFormatError(
                    f"{os.path.join(root, s)} has classes {parts[s][1]}, "
                    f"{os.path.join(root, 'train')} has {train_classes}: each split needs the "
                    f"same class folders")
        splits = {s: part[0] for s, part in parts.items()}
        class_names = train_classes
        if "test" not in splits and "val" in splits:
            splits["test"] = splits.pop("val")
        layout = "/".join(found)
    else:
        if any(os.path.isdir(os.path.join(root, s)) for s in ("val", "test")):
            raise DatasetFormatError(f"{root} has {' and '.join(found)} but no train folder; "
                                     f"expected {LAYOUT}")
        everything, class_names = _read_classes(root, input_size, channels)
        splits = {}
        splits["train"], splits["test"] = _split_off_val(everything, val_fraction, seed + 1)
        layout = "class folders"
    if "test" not in splits:  # DIR/train alone
        splits["train"], splits["test"] = _split_off_val(splits["train"], val_fraction, seed + 1)
    if "val" not in splits:
        splits["train"], splits["val"] = _split_off_val(splits["train"], val_fraction, seed)
    shapes = {tuple(s.images.shape[1:]) for s in splits.values() if len(s)}
    if len(shapes) > 1:
        raise DatasetFormatError(f"{root}: the splits' images differ in size "
                                 f"({', '.join('x'.join(map(str, s)) for s in sorted(shapes))}): "
                                 f"pass --input-size N to resize all to N x N")
    return Folder(splits["train"], splits["val"], splits["test"], class_names,
                  f"image folder {root} ({layout}): {len(class_names)} classes")


def _read_classes(folder: str, input_size: int | None, channels: int | None
                  ) -> tuple[Split, list[str]]:
    """Every image in folder/CLASS/ as one Split (uint8 [N, C, H, W], labels in class order)."""
    from torchvision.datasets import ImageFolder
    try:
        listing = ImageFolder(folder, loader=lambda path: path)
    except FileNotFoundError as e:  # no class folders, or class folders without images
        raise DatasetFormatError(f"{folder}: {e} (expected {LAYOUT})") from e
    mode = "L" if channels == 1 else "RGB"
    images, first = [], None
    for path, _ in listing.samples:
        image = _decode(path, mode)
        if input_size is not None:
            image = resize(image.unsqueeze(0), input_size)[0]
        elif first is None:
            first = (path, image.shape)
        elif image.shape != first[1]:
            raise DatasetFormatError(
                f"images differ in size: {first[0]} is {first[1][2]}x{first[1][1]}, {path} is "
                f"{image.shape[2]}x{image.shape[1]} (width x height): pass --input-size N to "
                f"resize all to N x N")
        images.append(image)
    labels = torch.tensor([label for _, label in listing.samples], dtype=torch.int64)
    return Split(torch.stack(images), labels), list(listing.classes)


def _decode(path: str, mode: str) -> torch.Tensor:
    """One image file -> uint8 [C, H, W] in PIL mode `mode` ("RGB" or "L"); errors name the file."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetFormatError(f"{path}: not a readable image ({e})") from e
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()
