import pytest

from edgepipe.fileio import atomic_path, read_json, sha256_file, write_json


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_an_existing_file(tmp_path):
    write_json(tmp_path / "a.json", {"b": 0})
    write_json(tmp_path / "a.json", {"b": 1})
    assert read_json(tmp_path / "a.json") == {"b": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_folder_where_a_file_goes_is_an_error_never_deleted(tmp_path):
    from edgepipe.errors import EdgepipeError

    target = tmp_path / "results.json"
    target.mkdir()
    (target / "keep").write_text("the user's file")
    with pytest.raises(EdgepipeError, match="is a folder"):
        write_json(target, {"b": 1})
    assert (target / "keep").read_text() == "the user's file"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind


def test_a_file_where_a_folder_goes_is_an_error(tmp_path):
    from edgepipe.errors import EdgepipeError

    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(EdgepipeError, match="is a file"):
        write_json(tmp_path / "runs" / "x" / "a.json", {})
    assert (tmp_path / "runs").read_text() == "not a folder"


def test_directory_digest_changes_with_content(tmp_path):
    (tmp_path / "f").write_text("1")
    first = sha256_file(tmp_path)
    (tmp_path / "f").write_text("2")
    assert sha256_file(tmp_path) != first
