"""Finding NVIDIA's command-line tools (ncu, compute-sanitizer) where CUDA installs them."""
import glob
import os
import re
import shutil
from typing import Optional, Sequence


def find_tool(name: str, locations: Sequence[str]) -> Optional[str]:
    """The path of the executable `name`: on PATH, else the first of `locations` (paths or globs)
    that exists and is executable, the newest version where a glob matches several; None if none."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in locations:
        paths = sorted(glob.glob(pattern), key=lambda p: [int(v) for v in re.findall(r"\d+", p)])
        paths = [p for p in paths if os.access(p, os.X_OK)]
        if paths:
            return paths[-1]
    return None
