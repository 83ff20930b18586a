"""Writes the fuzzer's seed corpus: the tiny every-op network (two exit rules) and the LeNet pair
of the zoo, exported with random weights. Usage: make_corpus.py OUT_DIR"""
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for tiny_models

from branchy_engine import models  # noqa: E402
from branchy_engine.export import write_model  # noqa: E402
from tiny_models import INPUT_SHAPE, tiny_net  # noqa: E402


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    meta = {"seed": "tiny", "values": [1, 2.5, None, True], "nested": {"a": ["\u00e9", "x\ny"]}}
    write_model(tiny_net(), os.path.join(out_dir, "tiny-entropy.branchy"), INPUT_SHAPE, "entropy",
                [0.5], metadata=meta)
    write_model(tiny_net(seed=1), os.path.join(out_dir, "tiny-maxprob.branchy"), INPUT_SHAPE, "maxprob",
                [math.inf], ["cat", "dog", "d\u00e9j\u00e0 vu"])
    for name in ("lenet", "b_lenet"):
        net = models.create(name)
        write_model(net, os.path.join(out_dir, f"{name}.branchy"), (1, 28, 28), "entropy",
                    [0.1] * (net.num_exits - 1), [str(i) for i in range(10)], {"model": name})
    print(f"seed corpus: {len(os.listdir(out_dir))} files in {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1])
