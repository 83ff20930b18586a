"""argparse `type=` converters shared by the `branchy` command line and the modules that have a
`python -m` entry point of their own (profiling.gpu, profiling.ncu), and threshold_list, the same
for Python callers. They live here, beside fileio and timing, so that no module needs to import
the command line (cli.py) for them."""
import argparse
import numbers
from typing import List, Optional


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


def threshold_list(value) -> Optional[List[float]]:
    """Thresholds as a Python caller gives them: None (the model's own), one number (for a network
    with one early exit), or one number per early exit (a list, tuple, 1-D tensor or array).
    Returns None or a list of floats; checking the count against the network is the caller's."""
    if value is None:
        return None
    if isinstance(value, numbers.Real) or getattr(value, "ndim", None) == 0:
        return [float(value)]
    if isinstance(value, (str, bytes)):
        raise TypeError(f"thresholds must be numbers, got the string {value!r}")
    try:
        return [float(v) for v in value]
    except TypeError:
        raise TypeError(f"thresholds must be a number or a sequence of numbers, got "
                        f"{type(value).__name__}") from None
