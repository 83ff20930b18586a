"""Writes the thread stress test's models (tests/stress/run.sh): the stress network of
tests/tiny_models.py (conv, BatchNorm, max and average pools, LRN, res_block, linear; three exits)
and the graph of tests/test_graph_ops.py with every other op kind (add, mul, concat, mean, channel
ops, layer norm, GELUs, depthwise and dilated convolutions, a skip across stages), random weights.
Usage: make_models.py OUT_DIR (prints the paths, one a line)"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for tiny_models and test_graph_ops

from branchy_engine.export import model_file, write_model  # noqa: E402
from test_graph_ops import every_op_graph  # noqa: E402
from tiny_models import STRESS_INPUT_SHAPE, stress_net  # noqa: E402


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    stress = os.path.join(out_dir, "stress.branchy")
    net = stress_net()
    write_model(net, stress, STRESS_INPUT_SHAPE, "entropy", [0.5] * (net.num_exits - 1))
    every_op = os.path.join(out_dir, "every-op.branchy")
    graph, _ = every_op_graph()
    with open(every_op, "wb") as f:
        f.write(model_file.serialize(graph, "{}"))
    print(stress)
    print(every_op)


if __name__ == "__main__":
    main(sys.argv[1])
