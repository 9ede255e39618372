import json

import pytest

from unseen.files import atomic_write, write_json_atomic


def test_the_file_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "out.json"
    write_json_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError, match="crash"), atomic_write(path, "w") as file:
        file.write('{"a": 2')
        raise RuntimeError("crash")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temporary file left


def test_the_open_file_names_its_temporary_path(tmp_path):
    with atomic_write(tmp_path / "x.bin") as file:
        file.write(b"abc")
        file.flush()
        assert file.name != str(tmp_path / "x.bin") and open(file.name, "rb").read() == b"abc"
    assert (tmp_path / "x.bin").read_bytes() == b"abc"
    with pytest.raises(ValueError, match="mode must be"), atomic_write(tmp_path / "y", "a"):
        pass


def test_files_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "m.json", {})
    finally:
        os.umask(mask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
