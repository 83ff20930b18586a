"""argparse `type=` converters shared by the `branchy` command line and the modules that have a
`python -m` entry point of their own (profiling.gpu, profiling.ncu). They live here, beside
fileio and timing, so that no module needs to import the command line (cli.py) for them."""
import argparse
from typing import List


def floats(text: str) -> List[float]:
    """'0.5,1,inf' -> [0.5, 1.0, inf]; anything else is an argparse error naming the text."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def names(text: str) -> List[str]:
    """'layer2,layer3' -> ['layer2', 'layer3'], spaces around each name dropped."""
    return [name.strip() for name in text.split(",")]


def positive(text: str) -> int:
    """'8' -> 8; zero, a negative number or not an integer is an argparse error naming the text."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value
