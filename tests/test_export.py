"""`branchy export` and the C++ model file reader together: every zoo network exports to a file whose
shapes, thresholds and weights agree with PyTorch; the exported ops compute what the network does;
bad checkpoints, options and modules give clear errors; damaged files give ValueError, never a crash."""
import json
import math
import os
import re
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from branchy_engine import checkpoint, models
from branchy_engine.export import model_file
from branchy_engine.commands.cli import main as branchy
from branchy_engine.export import choose_thresholds, export, write_model
from branchy_engine.export.lowering import lower, lower_network
from branchy_engine.runtime.gpu.layers import TORCH_OPS
from branchy_engine.models import BranchyNet

from tiny_models import INPUT_SHAPE, randomize_batch_norm, tiny_net

CLASSES = [f"class {i}" for i in range(10)]


def zoo_input(name):
    return [1, 28, 28] if "lenet" in name else [3, 32, 32]


def save_checkpoint(path, name, thresholds=None, criterion="entropy"):
    """A checkpoint as `branchy train` + `branchy calibrate` write it, with random weights."""
    torch.manual_seed(0)
    net = models.create(name)
    randomize_batch_norm(net)
    shape = zoo_input(name)
    checkpoint.save(path, {
        "model": name, "model_args": {"num_classes": 10, "in_channels": shape[0]},
        "state_dict": net.state_dict(), "phase": "joint",
        "dataset": {"name": "fake", "num_classes": 10, "class_names": CLASSES, "input_shape": shape},
        "metrics": {"val_accuracy": [50.0] * net.num_exits, "test_accuracy": [49.0] * net.num_exits},
        "thresholds": None if thresholds is None else {"criterion": criterion, "values": list(thresholds)},
    })
    return str(path)


def calibrated(tmp_path, name):
    n = models.create(name).num_exits
    return save_checkpoint(tmp_path / f"{name}.pt", name, [0.05] * (n - 2) + [math.inf] * (n > 1))


def run_ops(ops, values):
    """Runs lowered ops (float64, before writing) with the format's semantics in PyTorch (the GPU
    engine's table); `values` maps id(Value) to [1, C, H, W] tensors and gains the ops' outputs.
    Returns the last op's output."""
    out = None
    for op in ops:
        xs = [values[id(v)] for v in op.inputs]
        t = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).flatten() for a in op.tensors]
        out = TORCH_OPS[op.kind](xs, op.attrs, t)
        values[id(op.output)] = out if out.dim() == 4 else out.view(out.shape[0], -1, 1, 1)
    return out.flatten(1) if out is not None and out.shape[2:] == (1, 1) else out


def per_sample(shape):
    """A module's input or output shape for one sample as the summary writes it: [C, H, W]."""
    return list(shape[1:]) + [1] * (4 - len(shape))


@pytest.mark.parametrize("name", models.names())
def test_zoo_export_agrees_with_pytorch(tmp_path, name):
    ckpt = calibrated(tmp_path, name)
    out = tmp_path / f"{name}.branchy"
    written = export(ckpt, out)
    summary = model_file.summary(out)
    assert written["bytes"] == os.path.getsize(out)
    net = checkpoint.build_model(checkpoint.load(ckpt))
    n = net.num_exits
    assert summary["input"] == zoo_input(name) and summary["num_classes"] == 10
    assert summary["criterion"] == "entropy" and summary["class_names"] == CLASSES
    assert summary["thresholds"] == [0.05] * (n - 2) + ["inf"] * (n > 1)
    assert [e["stage"] for e in summary["exits"]] == net.exit_stages
    # Each distinct tensor is stored once.
    x_value = model_file.Value()
    stages, exits = lower_network(net, x_value)
    ops = [op for s in stages for op in s.ops] + [op for e in exits for op in e.ops]
    distinct = {np.asarray(t, "<f4").tobytes() for op in ops for t in op.tensors}
    assert summary["weights"] == sum(len(b) // 4 for b in distinct)
    assert len(summary["tensors"]) == len(distinct)

    # Every op's shapes are those its source module sees and gives in PyTorch.
    seen = {}

    def record(path):
        def hook(module, inputs, output):
            seen[path] = (inputs[0].shape, output.shape)
        return hook
    modules = dict(net.named_modules())
    for path in {op.source for op in ops}:
        modules[path].register_forward_hook(record(path))
    x = torch.randn(1, *zoo_input(name), dtype=torch.float64)
    with torch.no_grad():
        expected = net.double()(x)
    file_ops = ([op for stage in summary["stages"] for op in stage["ops"]]
                + [op for e in summary["exits"] for op in e["head"]])
    assert [op["kind"] for op in file_ops] == [op.kind for op in ops]
    for op, lowered in zip(file_ops, ops):
        shape_in, shape_out = seen[lowered.source]
        assert (op["in"], op["out"]) == (per_sample(shape_in), per_sample(shape_out)), lowered.source

    # The lowered ops compute the network's logits, exit by exit.
    values = {id(x_value): x}
    for s in stages:
        run_ops(s.ops, values)
    for e, want in zip(exits, expected):
        torch.testing.assert_close(run_ops(e.ops, values), want, rtol=1e-9, atol=1e-9)

    # The file holds those (folded) tensors as float32, as its ops say.
    from branchy_engine._extension import load
    spec = load().load_model_ops(str(out))
    for op, lowered in zip(spec["ops"], ops):
        for i, t in zip(op["tensor_ids"], lowered.tensors):
            np.testing.assert_array_equal(spec["tensors"][i].numpy(), t.astype(np.float32).ravel())


def test_tiny_net_uses_every_op_and_fuses_within_stages(tmp_path):
    net = tiny_net()
    summary = write_model(net, tmp_path / "tiny.branchy", INPUT_SHAPE, "maxprob", [0.9], ["a", "b", "c"])
    kinds = [[op["kind"] for op in stage["ops"]] for stage in summary["stages"]]
    assert kinds == [["conv2d", "max_pool2d", "lrn"], ["res_block", "avg_pool2d", "max_pool2d"]]
    act = [op["attrs"]["activation"] for op in summary["stages"][0]["ops"][:2]]
    assert act == [1, 0]
    assert summary["stages"][1]["ops"][1]["attrs"]["activation"] == 1  # the ReLU after the avg pool fused
    head = summary["exits"][1]["head"]
    assert [op["kind"] for op in head] == ["flatten", "activation", "linear", "linear"]
    assert [op["attrs"]["activation"] for op in head[2:]] == [1, 0]
    assert summary["criterion"] == "maxprob" and np.float32(summary["thresholds"][0]) == np.float32(0.9)
    x = torch.randn(1, *INPUT_SHAPE, dtype=torch.float64)
    x_value = model_file.Value()
    stages, exits = lower_network(net, x_value)
    with torch.no_grad():
        want = net.double()(x)
    values = {id(x_value): x}
    run_ops(stages[0].ops, values)
    torch.testing.assert_close(run_ops(exits[0].ops, values), want[0], rtol=1e-9, atol=1e-9)
    run_ops(stages[1].ops, values)
    torch.testing.assert_close(run_ops(exits[1].ops, values), want[1], rtol=1e-9, atol=1e-9)


def test_batch_norm_folds_into_the_conv_before_it():
    torch.manual_seed(1)
    block = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5, eps=1e-3), nn.ReLU())
    randomize_batch_norm(block, seed=3)
    block = block.double().eval()
    (op,), _ = lower("block", block, model_file.Value())
    assert op.kind == "conv2d" and op.attrs == dict(
        in_channels=3, out_channels=5, kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, pad_top=1,
        pad_left=1, pad_bottom=1, pad_right=1, dilation_h=1, dilation_w=1, groups=1, activation=1)
    w, b = (torch.from_numpy(a) for a in op.tensors)
    bn = block[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(w, block[0].weight * scale[:, None, None, None], rtol=0, atol=0)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        folded = F.relu(F.conv2d(x, w, b, stride=2, padding=1))
        torch.testing.assert_close(folded, block(x), rtol=1e-12, atol=1e-12)


def test_metadata_records_the_source(tmp_path):
    ckpt = save_checkpoint(tmp_path / "b.pt", "b_lenet", [math.inf])
    export(ckpt, tmp_path / "m.branchy")
    meta = model_file.summary(tmp_path / "m.branchy")["metadata"]
    assert meta["model"] == "b_lenet" and meta["source_checkpoint"] == os.path.abspath(ckpt)
    assert meta["dataset"]["class_names"] == CLASSES
    assert meta["metrics"] == {"val_accuracy": [50.0, 50.0], "test_accuracy": [49.0, 49.0]}
    assert meta["calibration"] == {"criterion": "entropy", "values": ["inf"]}  # JSON has no inf
    assert meta["thresholds_from"] == "checkpoint calibration"
    assert set(meta["exporter"]) == {"branchy_engine", "torch"} and meta["export_date"].endswith("+00:00")


def test_thresholds_from_options_override_the_calibration(tmp_path):
    ckpt = save_checkpoint(tmp_path / "b.pt", "b_lenet", [0.5])
    s = export(ckpt, tmp_path / "m.branchy", thresholds=[0.25], criterion="maxprob")
    assert (s["criterion"], s["thresholds"]) == ("maxprob", [0.25])
    assert model_file.summary(tmp_path / "m.branchy")["metadata"]["thresholds_from"] == "command line"


def test_a_single_exit_network_needs_no_thresholds(tmp_path):
    s = export(save_checkpoint(tmp_path / "l.pt", "lenet"), tmp_path / "l.branchy")
    assert s["thresholds"] == [] and len(s["exits"]) == 1


@pytest.mark.parametrize("record, values, criterion, message", [
    (None, None, None, "not calibrated: run `branchy calibrate CKPT` or pass --thresholds"),
    (None, [0.1, 0.2], None, "a network with 2 exits takes 1 thresholds (one per early exit), got 2"),
    (None, [math.nan], None, "thresholds must be >= 0 (or inf) and not NaN"),
    (None, [-0.5], None, "thresholds must be >= 0 (or inf) and not NaN"),
    ({"criterion": "patience", "values": [2.0]}, None, None, "the engine supports entropy and maxprob"),
    ({"criterion": "entropy", "values": [0.1]}, None, "maxprob", "calibrated for 'entropy', not 'maxprob'"),
])
def test_bad_thresholds_are_refused(record, values, criterion, message):
    with pytest.raises(ValueError) as e:
        choose_thresholds(record, 2, values, criterion)
    assert message in str(e.value)


def test_thresholds_are_float32_and_past_its_range_inf():
    assert choose_thresholds(None, 3, [0.1, 1e39]) == ("entropy", [float(np.float32(0.1)), math.inf],
                                                      "command line")


def _net(*modules, features):
    head = nn.Sequential(nn.Flatten(), nn.Linear(features, 2))
    return BranchyNet([nn.Sequential(*modules)], {0: head})


@pytest.mark.parametrize("net", [
    _net(nn.Conv2d(3, 4, 3), nn.Hardswish(), features=4 * 30 * 30),
    _net(nn.Conv2d(3, 4, 3, dilation=2, groups=1), nn.SiLU(), features=4 * 28 * 28),
    _net(nn.Conv2d(3, 6, 3, groups=3, padding=1), nn.ReLU6(), features=6 * 32 * 32),
    _net(nn.AvgPool2d(2, count_include_pad=False), nn.GELU(), features=3 * 16 * 16),
    _net(nn.MaxPool2d(2), nn.BatchNorm2d(3), nn.Sigmoid(), features=3 * 16 * 16),
    _net(nn.AdaptiveAvgPool2d(2), features=3 * 4),
], ids=["hardswish", "dilation", "depthwise-relu6", "avgpool-gelu", "lone-batchnorm", "adaptive-pool"])
def test_modules_beyond_the_papers_lower_from_their_aten_ops(tmp_path, net):
    randomize_batch_norm(net)
    net.eval()
    summary = write_model(net, tmp_path / "m.branchy", (3, 32, 32))
    from branchy_engine import Engine
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = net(x)[0]
    engine = Engine(str(tmp_path / "m.branchy"), kernels="own")
    for n in range(2):
        torch.testing.assert_close(engine.all_exit_logits(x[n])[0], want[n], rtol=1e-4, atol=1e-5)
    assert summary["stages"][0]["ops"]


class _Scaled(nn.Module):
    def forward(self, x):
        return x * 0.5


@pytest.mark.parametrize("net, message", [
    (_net(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), features=4 * 32 * 32),
     r"stages\.0: node \w+ \(aten\.\w*pad\w*\.\w+, from module 0 \(Conv2d\)\): this ATen op has no lowering"),
    (_net(nn.Conv2d(3, 4, 3, padding=3), features=4 * 36 * 36),
     r"padding 3 is not smaller than the dilated kernel 3 \(height\)"),
    (_net(nn.AvgPool2d(3, 1, 1, count_include_pad=False), features=3 * 32 * 32),
     "count_include_pad=False with padding or ceil_mode"),
    (_net(_Scaled(), features=3 * 32 * 32), r"mul with a Python number"),
    (_net(nn.Upsample(scale_factor=2), features=3 * 64 * 64),
     r"\(aten\.upsample_nearest2d\.vec, from module 0 \(Upsample\)\): this ATen op has no lowering; "
     r"the engine lowers convolutions"),
])
def test_unsupported_ops_name_the_node_op_and_module(tmp_path, net, message):
    with pytest.raises(ValueError, match=message):
        write_model(net.eval(), tmp_path / "m.branchy", (3, 32, 32))
    assert not os.listdir(tmp_path)


def test_a_traced_backbone_exports_and_runs(tmp_path):
    # attach_exits cuts on the fx graph; its stages lower from their ATen ops.
    torchvision = pytest.importorskip("torchvision")
    net = models.attach_exits(torchvision.models.mobilenet_v3_small(num_classes=10), ["features.3"])
    randomize_batch_norm(net)
    net.eval()
    summary = write_model(net, tmp_path / "m.branchy", (3, 32, 32), thresholds=[0.5])
    ops = [op for stage in summary["stages"] for op in stage["ops"]]
    kinds = {op["kind"] for op in ops}
    assert {"conv2d", "mean"} <= kinds and "channel_affine" not in kinds  # BN folded
    # Squeeze-excitation's multiplies went into the convolutions that read them (input_scale).
    scaled = [op for op in ops if op["kind"] == "conv2d" and op["attrs"]["input_scale"] == 1]
    assert "mul" not in kinds and scaled
    assert all(op["ins"][1] == [op["attrs"]["in_channels"], 1, 1] for op in scaled)
    # The inverted residuals' adds went into their projection convolutions, after a scale or not.
    assert "add" not in kinds and any(len(op["inputs"]) == 3 for op in scaled)
    from branchy_engine import Engine
    engine = Engine(str(tmp_path / "m.branchy"))
    x = torch.randn(3, 32, 32)
    with torch.no_grad():
        want = net(x[None])
    for got, ref in zip(engine.all_exit_logits(x), want):
        torch.testing.assert_close(got, ref[0], rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_a_failed_export_leaves_the_existing_file(tmp_path, monkeypatch):
    out = tmp_path / "m.branchy"
    out.write_bytes(b"previous")
    with pytest.raises(ValueError, match="not calibrated"):
        export(save_checkpoint(tmp_path / "b.pt", "b_lenet"), out)

    def refuse(path):
        assert os.path.getsize(path) > 0  # the new file was written, beside the old one
        raise ValueError("refused")
    monkeypatch.setattr(model_file, "summary", refuse)
    with pytest.raises(ValueError, match="fails the runtime's checks"):
        write_model(tiny_net(), out, INPUT_SHAPE, thresholds=[0.5])
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["b.pt", "m.branchy"]


NON_FINITE = [(math.nan, "NaN"), (math.inf, r"\+inf"), (-math.inf, "-inf")]


@pytest.mark.parametrize("value, name", NON_FINITE)
@pytest.mark.parametrize("tensor, element, message", [
    (lambda net: net.stages[0][0].weight, 7, "parameter stages.0.0.weight [4, 2, 3, 3]"),
    (lambda net: net.stages[0][1].running_var, 2, "buffer stages.0.1.running_var [4]"),
    (lambda net: net.exits["1"][4].bias, 1, "parameter exits.1.4.bias [3]"),
])
def test_a_non_finite_weight_is_refused_before_anything_is_written(tmp_path, tensor, element, message,
                                                                    value, name):
    # Named by the module's own parameter or buffer (a BatchNorm's is folded away before the
    # file); the existing file stays and no temporary file is left beside it.
    net = tiny_net()
    with torch.no_grad():
        tensor(net).view(-1)[element] = value
    out = tmp_path / "m.branchy"
    out.write_bytes(b"previous")
    with pytest.raises(ValueError, match=f"^{re.escape(message)} holds {name} at element {element} "
                                         r"\(weights must be finite\)$"):
        write_model(net, out, INPUT_SHAPE, thresholds=[0.5])
    assert out.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.branchy"]


def _relu_linear_graph(weight, bias):
    """A file's graph: op 0 a ReLU, op 1 a linear layer (3 -> 2) from module exits.0.1."""
    x = model_file.Value()
    relu = model_file.Op("activation", [x], dict(activation=1))
    linear = model_file.Op("linear", [relu.output], dict(in_features=3, out_features=2), [weight, bias],
                           source="exits.0.1")
    return model_file.Graph((3, 1, 1), 2, "entropy", [], [], x,
                            [model_file.Stage([relu, linear], [linear.output])],
                            [model_file.Exit(0, linear.output, [])])


@pytest.mark.parametrize("value, name", NON_FINITE + [(1e39, r"\+inf"), (-1e39, "-inf")])
def test_the_writer_names_the_op_tensor_and_element_of_a_non_finite_weight(value, name):
    # A float64 weight past float32's range (BatchNorm folding can make one) is written as inf:
    # refused too, with the value.
    weight = np.ones((2, 3))
    weight[1, 2] = value
    overflow = r" \(-?1e\+39 is past float32's range\)" if math.isfinite(value) else ""
    with pytest.raises(ValueError, match=f"^op 1 \\(linear from exits.0.1\\): tensor 0 \\(weight\\) holds "
                                         f"{name} at element 5{overflow} \\(weights must be finite\\)$"):
        model_file.serialize(_relu_linear_graph(weight, np.zeros(2)), "{}")
    with pytest.raises(ValueError, match=f"tensor 1 \\(bias\\) holds {name} at element 1"):
        model_file.serialize(_relu_linear_graph(np.ones((2, 3)), np.array([0.0, value])), "{}")
    # check_finite=False writes it, for the tests of the reader's own check.
    assert model_file.serialize(_relu_linear_graph(weight, np.zeros(2)), "{}", check_finite=False)


# ---- damaged files through the C++ reader ----

@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.branchy"
    write_model(tiny_net(), path, INPUT_SHAPE, "entropy", [0.5], ["a", "b", "c"], {"note": "test"})
    return path.read_bytes()


def reseal(data: bytearray) -> bytearray:
    """The file size field and checksum made right again, so a change reaches the checks behind them."""
    struct.pack_into("<Q", data, 16, len(data))
    struct.pack_into("<Q", data, len(data) - 8, model_file.fnv1a64(bytes(data[:-8])))
    return data


def refused(tmp_path, data) -> str:
    """The reader's ValueError message for `data` ("" if it reads it)."""
    path = tmp_path / "bad.branchy"
    path.write_bytes(bytes(data))
    try:
        model_file.summary(path)
    except ValueError as e:
        assert str(e).startswith(f"model file {path}: ")
        return str(e)
    return ""


def tensor_table(data) -> int:
    """Byte offset of the graph's tensor table (its count; the records follow)."""
    pos = model_file.HEADER.unpack_from(data)[4] + 20  # input, num_classes, criterion
    pos += 4 + 4 * struct.unpack_from("<I", data, pos)[0]  # thresholds
    names, pos = struct.unpack_from("<I", data, pos)[0], pos + 4
    for _ in range(names):
        pos += 4 + -(-struct.unpack_from("<I", data, pos)[0] // 4) * 4
    return pos


def test_truncations_are_refused(tmp_path, tiny_file):
    # Every length through the header and the graph's start, then a sample (the C++ test does all).
    for n in sorted(set(range(160)) | set(range(160, len(tiny_file), 13))):
        message = refused(tmp_path, tiny_file[:n])
        assert "file size field says" in message or "shorter than the 80-byte minimum" in message, n
        if n >= 80:
            assert "runs past the checksum" in refused(tmp_path, reseal(bytearray(tiny_file[:n]))), n


def test_every_header_byte_flip_is_refused(tmp_path, tiny_file):
    for i in range(model_file.HEADER.size):
        data = bytearray(tiny_file)
        data[i] ^= 0x55
        assert refused(tmp_path, data), i


def test_graph_byte_flips_are_refused_or_read(tmp_path, tiny_file):
    graph_at, graph_size = model_file.HEADER.unpack_from(tiny_file)[4:6]
    for i in range(graph_at, graph_at + graph_size):
        data = bytearray(tiny_file)
        data[i] ^= 0xFF
        refused(tmp_path, reseal(data))  # a crash would end the test run


def _set(data, fmt, at, value, seal=True):
    data = bytearray(data)
    struct.pack_into(fmt, data, at, value)
    return reseal(data) if seal else data


@pytest.mark.parametrize("fmt, at, value, seal, message", [
    ("<8s", 0, b"BRANCHZ\0", False, "magic is not"),
    ("<I", 8, 3, True, "format version 3 is newer than this reader's (2); upgrade branchy-engine"),
    ("<I", 8, 1, True, "format version 1 (a chain of a fixed op list) is no longer read; re-export"),
    ("<I", 12, 2, True, "flags 0x2 has bits this reader does not know"),
    ("<I", 12, 3, True, "flags 0x3 has bits this reader does not know"),
    ("<Q", 16, 1 << 40, False, "file size field says 1099511627776 bytes but the file has"),
    ("<Q", -8, 12345, False, "checksum mismatch"),
    ("<Q", 56, (1 << 64) - 64, True, "weights section (offset 18446744073709551552"),
    ("<Q", 24, 0, True, "graph section starts at byte 0, inside the header"),
    ("<Q", "tensor", 1 << 20, True,
     "tensor 0: offset 1048576 and 72 floats run past the end of the weights section"),
    ("<Q", "tensor", (1 << 64) - 64, True, "run past the end of the weights section"),
    ("<Q", "count", (1 << 62) + 72, True, "run past the end of the weights section"),
    ("<Q", "count", 71, True,
     "op 0 (conv2d): weight [out, in / groups, kernel_h, kernel_w] (tensor 0) has 71 elements, "
     "expected 72 = out 4 * in / groups 2 * 3 * 3"),
    ("<I", "num_tensors", 0xFFFFFFFF, True, "num_tensors is 4294967295 but only"),
    ("<I", "num_ops", 0xFFFFFFFF, True, "num_ops is 4294967295 but only"),
])
def test_damaged_fields_are_named(tmp_path, tiny_file, fmt, at, value, seal, message):
    table = tensor_table(tiny_file)
    num_tensors = struct.unpack_from("<I", tiny_file, table)[0]
    at = {"num_tensors": table, "tensor": table + 4, "count": table + 12,
          "num_ops": table + 4 + 16 * num_tensors}.get(at, at)
    at = at % len(tiny_file)
    assert message in refused(tmp_path, _set(tiny_file, fmt, at, value, seal))


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"model file {tmp_path}/none.branchy: cannot open")):
        model_file.summary(tmp_path / "none.branchy")


# ---- the command line ----

def test_cli_export_and_inspect(tmp_path, capsys):
    ckpt = calibrated(tmp_path, "b_lenet")
    out = str(tmp_path / "m.branchy")
    assert branchy(["export", ckpt, "-o", out]) == 0
    printed = capsys.readouterr().out
    # Stages and exits numbered from 1, as in every printed report.
    assert f"wrote {out}" in printed and "  stage 1: " in printed and "  stage 0" not in printed
    assert "exit 1 after stage 1: 5 ops" in printed and "exit 2 after stage 2: 3 ops (flatten, linear x2)" in printed
    assert branchy(["inspect", out]) == 0
    printed = capsys.readouterr().out
    assert "exit rule: entropy, thresholds inf" in printed and "exit 1 (after stage 1, reads value" in printed
    assert "class names: class 0, class 1" in printed and "metadata: format, model" in printed
    assert branchy(["inspect", out, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_classes"] == 10
    assert branchy(["export", ckpt, "-o", out, "--thresholds", "0.5", "--criterion", "maxprob"]) == 0
    assert "exit rule: maxprob, thresholds 0.5" in capsys.readouterr().out


def test_cli_errors_exit_2(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "b.pt", "b_lenet")
    assert branchy(["export", ckpt, "-o", str(tmp_path / "m.branchy")]) == 2
    assert "branchy export: error: not calibrated" in capsys.readouterr().err
    assert branchy(["export", ckpt, "-o", str(tmp_path / "m.branchy"), "--thresholds", "1,2"]) == 2
    assert "takes 1 thresholds" in capsys.readouterr().err
    (tmp_path / "junk.branchy").write_bytes(b"\0" * 100)
    assert branchy(["inspect", str(tmp_path / "junk.branchy")]) == 2
    assert "magic is not" in capsys.readouterr().err


class _PreActivation(nn.Module):
    """relu(bn(conv(x) + x)): a residual fused into the conv must stop BatchNorm folding into it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x) + x))


class _PermuteFanOut(nn.Module):
    """A channels-last view read twice: no activation may fuse into the conv behind it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1)
        return (torch.relu(y) + y).permute(0, 3, 1, 2)


class _Clamped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.register_buffer("scale", torch.arange(3.0).view(3, 1, 1) + 0.5)

    def forward(self, x):
        return torch.clamp(self.conv(x), min=0.25) * self.scale


@pytest.mark.parametrize("block", [_PreActivation, _PermuteFanOut, _Clamped])
def test_fusions_keep_the_networks_answer(tmp_path, block):
    torch.manual_seed(0)
    net = _net(block(), features=3 * 32 * 32)
    randomize_batch_norm(net)
    net.eval()
    write_model(net, tmp_path / "m.branchy", (3, 32, 32))
    from branchy_engine import Engine
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = net(x)[0]
    for kernels in ("own", "dnnl"):
        engine = Engine(str(tmp_path / "m.branchy"), kernels=kernels)
        for n in range(2):
            torch.testing.assert_close(engine.all_exit_logits(x[n])[0], want[n], rtol=1e-4, atol=1e-4)


class _AlongWidth(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.arange(32.0))

    def forward(self, x):
        return x * self.w


def test_a_constant_along_width_is_refused_not_taken_per_channel(tmp_path):
    # [32] broadcasts along W of a [B, 32, 32, 32] value; the engine's per-channel scale would be wrong.
    net = _net(nn.Conv2d(3, 32, 1), _AlongWidth(), features=32 * 32 * 32).eval()
    with pytest.raises(ValueError, match=r"mul by a constant of shape \(32,\) \(the engine takes a scalar "
                                         r"or one value per channel\)"):
        write_model(net, tmp_path / "m.branchy", (3, 32, 32))
