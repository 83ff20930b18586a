"""Any network through the engine (issue 13, section 5): every torchvision classification family
and a hand-written module with functional calls, exits attached at two places, random weights and
randomised BatchNorm statistics, 64x64 input, lowered from its ATen ops and exported. The engine's
logits equal PyTorch's within 1e-4 (relative to the exit's largest logit) at every exit, with own
kernels on every instruction set the CPU has, with oneDNN and with measured choices; a batch with
per-sample exits leaves as its samples do one by one, where PyTorch's scores say."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from branchy_engine import Engine
from branchy_engine._extension import load
from branchy_engine.export import write_model
from branchy_engine.models import attach_exits, default_exits

from tiny_models import randomize_batch_norm

torchvision = pytest.importorskip("torchvision")

INPUT = (3, 64, 64)
MODELS = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2",
          "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_s",
          "regnet_x_400mf", "regnet_y_400mf", "mnasnet0_5", "shufflenet_v2_x0_5", "squeezenet1_1",
          "densenet121", "googlenet", "convnext_tiny", "handmade"]
ISAS = ("portable", "avx2", "avx512")


class Handmade(nn.Module):
    """A network written by hand with functional calls: BatchNorm, a depthwise conv, a residual
    add, squeeze-and-excitation, a concat with a pooled copy, GELU, global pooling by mean."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 5, padding=2, groups=16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.squeeze = nn.Conv2d(16, 4, 1)
        self.excite = nn.Conv2d(4, 16, 1)
        self.down = nn.Conv2d(32, 24, 3, stride=2, padding=1)
        self.fc = nn.Linear(24, classes)

    def forward(self, x):
        x = F.relu6(self.bn(self.stem(x)))
        x = x + self.pw(F.hardswish(self.dw(x)))
        s = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        x = x * s
        x = torch.cat([x, F.max_pool2d(x, 3, 1, 1)], 1)
        x = F.gelu(self.down(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(name):
    if name == "handmade":
        model = Handmade()
    else:
        kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
        model = getattr(torchvision.models, name)(num_classes=10, **kwargs)
    model.eval()
    at = default_exits(model, INPUT)
    net = attach_exits(model, at, input_shape=INPUT)
    randomize_batch_norm(net)
    return net.eval(), at


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            net, at = build(name)
            path = tmp_path_factory.mktemp(name) / f"{name}.branchy"
            write_model(net, path, INPUT, thresholds=[0.5] * (net.num_exits - 1))
            x = torch.randn(8, *INPUT)
            with torch.no_grad():
                want = [z.double() for z in net.double()(x.double())]
            cache[name] = (str(path), at, x, want)
        return cache[name]
    return get


def _engine(path, kernels, isa):
    previous = load().cpu_isa()
    try:
        if isa is not None and load().set_cpu_isa(isa) != isa:
            return None
        return Engine(path, kernels=kernels)
    finally:
        load().set_cpu_isa(previous)


def _close(engine, x, want, label, samples=3):
    for n in range(samples):
        for e, (got, ref) in enumerate(zip(engine.all_exit_logits(x[n]), want)):
            scale = ref[n].abs().max().item()
            err = (got.double() - ref[n]).abs().max().item()
            assert err <= 1e-4 * scale + 1e-6, (f"{label}: exit {e}, sample {n}: error {err:.3g} of "
                                                 f"{scale:.3g}\n{engine.describe()}")


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_pytorch_in_every_kernel_mode_and_isa(exported, name):
    path, at, x, want = exported(name)
    assert len(want) == 3, at  # two attached exits and the model's own classifier
    # "pin:" with one digit for every op: each op's second, third and fourth own kernel where it
    # has one (the Winograd 3x3, the NCHW direct...), so that every own kernel runs at least once.
    ops = len(Engine(path, kernels="own").choices)
    modes = [("own", isa) for isa in ISAS] + [("dnnl", None), ("measure", None)]
    modes += [("pin:" + digit * ops, None) for digit in "123"]
    ran = 0
    for kernels, isa in modes:
        engine = _engine(path, kernels, isa)
        if engine is not None:
            _close(engine, x, want, f"{name} {kernels} {isa or 'best'}")
            ran += 1
    assert ran >= 3  # portable, oneDNN (or own again without it), measured


@pytest.mark.parametrize("name", MODELS)
def test_a_batch_leaves_per_sample_where_pytorch_says(exported, name):
    path, _, x, want = exported(name)
    entropy = -(want[0].softmax(1) * want[0].log_softmax(1)).sum(1)  # PyTorch's, at exit 0
    threshold = float(entropy.median())
    engine = Engine(path, kernels="own", thresholds=[threshold, float("inf")], max_batch=3)
    batch = engine(x)
    for n in range(x.shape[0]):
        one = engine(x[n])
        assert (one.prediction, one.exit) == (int(batch.prediction[n]), int(batch.exit[n])), n
        if abs(entropy[n].item() - threshold) > 1e-4:
            assert one.exit == (0 if entropy[n].item() < threshold else 1), n
    assert 0 < int((batch.exit == 0).sum()) < x.shape[0]


@pytest.mark.parametrize("name", MODELS)
def test_the_gpu_engines_graph_matches_pytorch(exported, name):
    # The GPU engine's modules (branchy_engine.runtime.gpu.layers) run the same graph; here on the CPU.
    from branchy_engine.runtime.gpu.layers import LoadedNet
    path, _, x, want = exported(name)
    net = LoadedNet(load().load_model_ops(path)).eval()
    with torch.no_grad():
        got = net(x[:3])
    for e, (g, ref) in enumerate(zip(got, want)):
        scale = ref[:3].abs().max().item()
        assert (g.double() - ref[:3]).abs().max().item() <= 1e-4 * scale + 1e-6, (name, e)


@pytest.mark.parametrize("mode", ["eager", "graphs", "conditional"])
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "handmade"])
def test_the_gpu_engine_runs_the_graph_on_a_gpu(exported, cuda, name, mode):
    # The GPU engine on graphs with skips, squeeze-excitation and concat (bench/gpu_check.sh runs
    # this file; two networks keep its GPU-test step within its time limit, the torch table itself
    # is checked on every network above): single samples and a batch with per-sample exits leave
    # where PyTorch's scores say, in every mode.
    from branchy_engine.runtime.gpu.engine import GpuEngine
    path, _, x, want = exported(name)
    entropy = -(want[0].softmax(1) * want[0].log_softmax(1)).sum(1)
    threshold = float(entropy.median())
    engine = GpuEngine(path, device=cuda, mode=mode, thresholds=[threshold, float("inf")], max_batch=8)
    near = (entropy - threshold).abs() < 1e-3
    expected_exit = (entropy >= threshold).long()
    singles = [engine(s.to(cuda)) for s in x]
    batch = engine(x.to(cuda))
    for n, one in enumerate(singles):
        if near[n]:
            # Batch 1 and batch 8 run other cuBLAS and cuDNN kernels on a GPU, which differ in the
            # last bits: a score at the threshold may leave in one and not the other.
            continue
        assert (one.exit, one.prediction) == (int(batch.exit[n]), int(batch.prediction[n])), n
        assert one.exit == int(expected_exit[n]), n
        assert one.prediction == int(want[one.exit][n].argmax()), n
