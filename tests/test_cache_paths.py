from pathlib import Path

import pytest

from layerskip.cache_paths import write_text_whole


def test_write_text_whole_replaces_and_leaves_no_temporary(tmp_path: Path):
    path = tmp_path / "costs" / "a.json"
    write_text_whole(path, "first")
    write_text_whole(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_write_text_whole_keeps_the_old_file_when_writing_fails(tmp_path: Path):
    path = tmp_path / "a.json"
    write_text_whole(path, "kept")
    with pytest.raises(UnicodeEncodeError):
        write_text_whole(path, "\udcff")  # a lone surrogate cannot be encoded
    assert path.read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
