import os

import pytest

from branchy_engine.fileio import atomic_path, write_text


def test_write_text_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "out.md"
    write_text(path, "one")
    write_text(path, "two")
    assert path.read_text() == "two"
    assert os.listdir(path.parent) == ["out.md"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("saved before")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "saved before"
    assert os.listdir(tmp_path) == ["model.pt"]
