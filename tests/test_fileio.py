import pytest

from edgepipe.fileio import atomic_path, sha256_file, write_json, read_json


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_existing_file_and_directory(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert [p.name for p in target.iterdir()] == ["new"]
    write_json(tmp_path / "a.json", {"b": 1})
    assert read_json(tmp_path / "a.json") == {"b": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_directory_digest_changes_with_content(tmp_path):
    (tmp_path / "f").write_text("1")
    first = sha256_file(tmp_path)
    (tmp_path / "f").write_text("2")
    assert sha256_file(tmp_path) != first
