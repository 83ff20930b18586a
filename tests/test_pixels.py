"""Inputs as users hold them: raw 8-bit images ([H, W, C] from a camera or an image file, [C, H, W],
batches), prepared inside the runtime as the model file records (pixel_max, mean, std), giving the
very floats, and so the very answers, of the float path fed as training fed the network."""
import os
import re
import struct

import numpy as np
import pytest
import torch

from branchy_engine import Engine
from branchy_engine.commands.cli import main as branchy
from branchy_engine.export import model_file, write_model

from tiny_models import INPUT_SHAPE, tiny_net

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "branchy_engine", "checkpoints")
MEAN, STD = [0.49, 0.45], [0.25, 0.26]  # the tiny net takes two channels
RGB_MEAN, RGB_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet's


def prepared(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float32 as training prepares it (data.Dataset.prepare's arithmetic)."""
    x = images.to(torch.float32).div_(255.0)
    for c, (m, s) in enumerate(zip(mean, std)):
        x[:, c].sub_(m).div_(s)
    return x


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """The tiny net (two channels) with a normalisation recorded, a threshold splitting the
    samples between its exits."""
    path = tmp_path_factory.mktemp("pixels") / "rgb.branchy"
    write_model(tiny_net(), path, INPUT_SHAPE, "entropy", [0.9], input_prep=dict(pixel_max=255.0, mean=MEAN, std=STD))
    return str(path)


def _images(n, seed=0):
    return torch.randint(0, 256, (n, *INPUT_SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_the_file_records_the_preparation(rgb):
    summary = model_file.summary(rgb)
    assert summary["input_prep"]["pixel_max"] == 255.0
    assert np.allclose(summary["input_prep"]["mean"], MEAN) and np.allclose(summary["input_prep"]["std"], STD)
    recorded = Engine(rgb).input_prep
    assert recorded["pixel_max"] == 255.0
    assert np.array_equal(np.float32(recorded["mean"]), np.float32(MEAN))
    assert np.array_equal(np.float32(recorded["std"]), np.float32(STD))
    assert struct.unpack_from("<I", open(rgb, "rb").read(), 12)[0] == model_file.FLAG_INPUT_PREP


@pytest.mark.parametrize("kernels", ["own", "measure"])
def test_pixels_in_every_order_give_the_float_paths_answers_bit_for_bit(rgb, kernels):
    images = _images(40)
    x = prepared(images, MEAN, STD)
    # The threshold at the median entropy of exit 0: half the samples leave there.
    threshold = float(Engine(rgb, thresholds=[float("inf")])(x).score.median())
    want = Engine(rgb, kernels=kernels, thresholds=[threshold])(x)
    assert 0 < int((want.exit == 0).sum()) < 40  # both exits taken
    engine = Engine(rgb, kernels=kernels, thresholds=[threshold], input="uint8", max_batch=16)  # 3 chunks
    hwc = images.permute(0, 2, 3, 1).contiguous()
    for name, got in [("batch CHW", engine(images)), ("batch HWC", engine(hwc)),
                      ("batch HWC numpy", engine(hwc.numpy())),
                      ("batch HWC, a strided view", engine(images.permute(0, 2, 3, 1)))]:
        for field in ("prediction", "exit", "score"):
            assert torch.equal(getattr(got, field), getattr(want, field)), (name, field)
    for i in (0, 7):
        for one in (images[i], hwc[i], hwc[i].numpy()):
            got = engine(one)
            assert (got.prediction, got.exit, got.score) == (int(want.prediction[i]), int(want.exit[i]),
                                                            float(want.score[i]))
    assert engine.stats()["samples"] == 4 * 40 + 6
    # prepare(): the runtime's floats are training's floats.
    assert torch.equal(engine.prepare(images), prepared(images, MEAN, STD))
    assert torch.equal(engine.prepare(hwc[3].numpy()), prepared(images[3:4], MEAN, STD)[0])


def test_one_channel_images_may_come_without_a_channel_axis(tmp_path):
    net_path = tmp_path / "gray.branchy"
    from branchy_engine import models
    torch.manual_seed(0)
    write_model(models.create("b_lenet").eval(), net_path, (1, 28, 28), "entropy", [0.3],
                input_prep=dict(pixel_max=255.0, mean=[0.2860], std=[0.3530]))
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    want = Engine(str(net_path), kernels="own")(prepared(images, [0.2860], [0.3530]))
    engine = Engine(str(net_path), kernels="own", input="uint8")
    for got in (engine(images[:, 0]), engine(images), engine(images.permute(0, 2, 3, 1))):  # [B, H, W] ...
        assert torch.equal(got.score, want.score) and torch.equal(got.prediction, want.prediction)
    assert engine(images[2, 0]).score == float(want.score[2])  # one [H, W] image


def test_pixel_errors_say_what_to_do(rgb, tmp_path):
    images = _images(2)
    floats = Engine(rgb, kernels="own")
    with pytest.raises(TypeError, match=re.escape('input is uint8 (raw pixels?); this engine takes float32 prepared '
                                                  'as in training (normalised). Make it with Engine(..., '
                                                  'input="uint8")')):
        floats(images)
    pixels = Engine(rgb, kernels="own", input="uint8")
    with pytest.raises(TypeError, match=r"this engine takes raw pixels, uint8 .*got torch.float32"):
        pixels(images.float())
    c, h, w = INPUT_SHAPE
    with pytest.raises(ValueError, match=re.escape(f"pixels must be one image [C, H, W] = [{c}, {h}, {w}] or "
                                                   f"[H, W, C] = [{h}, {w}, {c}] or a batch of them, got "
                                                   f"[2, {c}, {h}, {w + 1}]")):
        pixels(torch.zeros(2, c, h, w + 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="input must be one of"):
        Engine(rgb, input="rgb")
    # A model without the record cannot take pixels: say how to get one.
    bare = tmp_path / "bare.branchy"
    write_model(tiny_net(), bare, INPUT_SHAPE, "entropy", [0.9])
    assert model_file.summary(bare)["input_prep"] is None and Engine(str(bare)).input_prep is None
    with pytest.raises(ValueError, match=r"records no input preparation, so the engine cannot take raw pixels: "
                                         r"re-export it \(branchy export records the training normalisation"):
        Engine(str(bare), input="uint8")
    with pytest.raises(ValueError, match="this model file records no input preparation"):
        Engine(str(bare)).prepare(images)


def test_an_image_whose_shape_reads_both_ways_must_say_which(tmp_path):
    # Input [3, 3, 3]: a [3, 3, 3] image is CHW and HWC alike.
    from branchy_engine.export.model_file import Exit, Graph, Op, Stage, Value
    x = Value()
    mean = Op("mean", [x])
    graph = Graph((3, 3, 3), 3, "entropy", [], [], x, [Stage([mean], [mean.output])], [Exit(0, mean.output, [])],
                  model_file.InputPrep(255.0, RGB_MEAN, RGB_STD))
    path = tmp_path / "cube.branchy"
    path.write_bytes(model_file.serialize(graph, "{}"))
    image = torch.arange(27, dtype=torch.uint8).reshape(3, 3, 3)
    with pytest.raises(ValueError, match=r'read both as \[C, H, W\] and as \[H, W, C\].*input="uint8_chw" or "uint8_hwc"'):
        Engine(str(path), input="uint8")(image)
    chw = Engine(str(path), input="uint8_chw").prepare(image)
    hwc = Engine(str(path), input="uint8_hwc").prepare(image)
    assert torch.equal(chw, prepared(image[None], RGB_MEAN, RGB_STD)[0])
    assert torch.equal(hwc, prepared(image.permute(2, 0, 1)[None].contiguous(), RGB_MEAN, RGB_STD)[0])


@pytest.mark.parametrize("prep, message", [
    (dict(pixel_max=0.0, mean=MEAN, std=STD), "pixel_max must be finite and > 0"),
    (dict(pixel_max=255.0, mean=MEAN[:1], std=STD), "1 mean values for 2 channels"),
    (dict(pixel_max=255.0, mean=MEAN, std=[1.0, 0.0]), "std must be finite and > 0"),
    (dict(pixel_max=255.0, mean=[0.0, float("nan")], std=STD), "mean must be finite"),
])
def test_the_writer_refuses_a_bad_preparation(tmp_path, prep, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        write_model(tiny_net(), tmp_path / "bad.branchy", INPUT_SHAPE, "entropy", [0.9], input_prep=prep)
    assert not (tmp_path / "bad.branchy").exists()


@pytest.mark.parametrize("field, value, message", [
    (0, float("nan"), "input preparation: pixel_max is nan, expected finite and > 0"),
    (0, -1.0, "input preparation: pixel_max is -1, expected finite and > 0"),
    (2, float("inf"), "input preparation: mean of channel 1 is inf, expected finite"),
    (4, 0.0, "input preparation: std of channel 1 is 0, expected finite and > 0"),
])
def test_the_reader_refuses_a_bad_preparation(rgb, tmp_path, field, value, message):
    from test_export import refused, reseal
    data = bytearray(open(rgb, "rb").read())
    # The record follows the thresholds (one) and class names (none).
    at = model_file.HEADER.unpack_from(data)[4] + 20 + 8 + 4
    assert struct.unpack_from("<f", data, at)[0] == 255.0
    struct.pack_into("<f", data, at + 4 * field, value)
    assert message in refused(tmp_path, reseal(data))


@pytest.mark.skipif(not os.path.exists(os.path.join(SHIPPED, "b_lenet.pt"))
                    or not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="needs the shipped B-LeNet and the Debian Fashion-MNIST")
def test_the_test_split_as_raw_pixels_gives_branchy_runs_accuracy(tmp_path, capsys):
    # The Fashion-MNIST test split as the IDX file holds it (uint8), through input="uint8", gives
    # exactly the accuracy `branchy run` prints (which prepares floats in Python as training did).
    from branchy_engine import data
    from branchy_engine.export import export
    path = str(tmp_path / "b_lenet.branchy")
    export(os.path.join(SHIPPED, "b_lenet.pt"), path, thresholds=[0.5])
    assert branchy(["run", path, "--kernels", "own"]) == 0
    printed = re.search(r"accuracy: ([\d.]+)%", capsys.readouterr().out).group(1)
    engine = Engine(path, kernels="own", input="uint8")
    d = data.load("fashion-mnist")
    images, labels = d.test.batch(torch.arange(len(d.test)))
    assert images.dtype == torch.uint8 and len(labels) == 10000
    out = engine(images)
    assert f"{100.0 * float((out.prediction == labels).double().mean()):.2f}" == printed
    x, _, _ = data.model_samples(engine.metadata, engine.input_shape)
    assert torch.equal(out.score, Engine(path, kernels="own")(x).score)  # the same floats ran
    # branchy-run on the IDX files prepares them as the file records: the same accuracy again.
    import subprocess
    from branchy_engine.profiling import cachesim
    root = "/usr/share/datasets/fashion-mnist"
    run = subprocess.run([cachesim.find_runner(), path, "--idx", f"{root}/t10k-images-idx3-ubyte.gz",
                          "--labels", f"{root}/t10k-labels-idx1-ubyte.gz", "--kernels", "own"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"accuracy: {printed}%" in run.stdout


def test_the_gpu_engine_says_where_raw_pixels_go(rgb):
    # Raw pixels are the CPU engine's; the GPU engine says how to prepare them (checked before
    # anything needs a GPU).
    with pytest.raises(ValueError, match=re.escape("input='uint8': the GPU engine takes float32 input prepared "
                                                   "as in training; turn raw pixels into it with the CPU "
                                                   "engine's prepare()")):
        Engine(rgb, device="cuda", input="uint8")
