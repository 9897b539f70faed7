"""Trust on the file system: edgepipe reads and writes only inside a run directory it marked, never through a
link; a full disk or a read-only folder is one error line with nothing half-written; SIGTERM unwinds like Ctrl-C.

The full and read-only file systems are real: a small tmpfs mounted for the test (root can mount; as root,
chmod does not stop a write, so a read-only mount stands in for a read-only folder). Without root, the
read-only folder is made with chmod and the full-disk tests are skipped."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgepipe.errors import EdgepipeError
from edgepipe.fileio import sha256_file
from tests.conftest import tiny_overrides
from tests.test_trust import cli, one_error_line

ROOT = os.geteuid() == 0


def _tree(path: Path) -> dict[str, bytes]:
    """Every regular file under ``path`` (links not followed) with its bytes."""
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink()
    }


def _leftovers(path: Path) -> list[str]:
    """Temporary files and scratch folders a command left under ``path``."""
    from edgepipe.pipeline.rundir import LEFTOVER

    return [str(p) for p in path.rglob(".*") if LEFTOVER.match(p.name) or p.name == ".edgepipe-tmp"]


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a folder on a fresh tmpfs of that size (needs root), unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str, name: str = "disk") -> Path:
        if not ROOT:
            pytest.skip("mounting a small file system needs root")
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True, text=True
        )
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _fill(disk: Path, leave_bytes: int) -> None:
    """Fill ``disk`` with one file until only ``leave_bytes`` stay free."""
    info = os.statvfs(disk)
    free = info.f_bavail * info.f_frsize
    with open(disk / "filler", "wb") as handle:
        handle.truncate(0)
        for _ in range(max(0, free - leave_bytes) // (1 << 20)):
            handle.write(b"\0" * (1 << 20))
        handle.write(b"\0" * (max(0, free - leave_bytes) % (1 << 20)))


# ------------------------------------------------------------------ never through a link, never outside


def test_a_name_inside_a_folder_is_refused_when_it_leaves_it_or_passes_a_link(tmp_path):
    from edgepipe.fileio import inside

    root = tmp_path / "run"
    (root / "artifacts").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    assert inside(root, "artifacts/a.tflite") == root / "artifacts" / "a.tflite"
    assert inside(root, "new/folder/file") == root / "new" / "folder" / "file"  # not there yet: allowed
    for name in ("../x", "/etc/passwd", "artifacts/../../x", ""):
        with pytest.raises(EdgepipeError, match="is not a name inside"):
            inside(root, name)
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    (root / "artifacts" / "a.tflite").symlink_to(tmp_path / "elsewhere" / "user.tflite")
    for name in ("linked", "linked/artifacts.json", "artifacts/a.tflite"):
        with pytest.raises(EdgepipeError, match="is a symbolic link"):
            inside(root, name)
    (tmp_path / "chosen").symlink_to(root)  # the run directory itself may be a link the user chose
    assert inside(tmp_path / "chosen", "artifacts") == tmp_path / "chosen" / "artifacts"


def test_a_lock_file_linked_to_a_users_file_is_never_emptied(run_copy, tmp_path):
    diary = tmp_path / "diary.txt"
    diary.write_text("my diary\n")
    (run_copy / ".edgepipe-lock").symlink_to(diary)
    one_error_line(cli("report", "--output", run_copy), "is a symbolic link")
    assert diary.read_text() == "my diary\n"
    (run_copy / ".edgepipe-lock").unlink()
    os.link(diary, run_copy / ".edgepipe-lock")  # a hard link: the same file under two names
    one_error_line(cli("report", "--output", run_copy), "linked to another file")
    assert diary.read_text() == "my diary\n"


def test_artifacts_linked_to_another_folder_are_neither_written_nor_read(run_copy, tmp_path):
    mine = tmp_path / "my-models"
    (run_copy / "artifacts").rename(mine)
    (mine / "artifacts.json").write_text('{"my": "own index"}')
    (run_copy / "artifacts").symlink_to(mine, target_is_directory=True)
    before = _tree(mine)
    one_error_line(cli("export", "--output", run_copy), "is a symbolic link")
    one_error_line(cli("bench", "--output", run_copy), "is a symbolic link")
    one_error_line(cli("verify", run_copy), "is a symbolic link")
    assert _tree(mine) == before


def _edit_records(run: Path, stage: str, outputs: dict[str, str]) -> None:
    """Add ``outputs`` (name: sha256) to a stage's record, and the new stages.json's digest to the manifest
    (so the edit itself is not what a verify finds)."""
    records = json.loads((run / "stages.json").read_text())
    records[stage]["outputs"].update(outputs)
    (run / "stages.json").write_text(json.dumps(records))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"]["stages.json"]["sha256"] = sha256_file(run / "stages.json")
    (run / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["../../secret.txt", "/etc/hostname"])
def test_records_naming_a_file_outside_are_refused_not_hashed(run_copy, tmp_path, name):
    outside = (run_copy / name) if not name.startswith("/") else Path(name)
    if not name.startswith("/"):
        outside.resolve().write_text("a user's secret")
    if not outside.exists():
        pytest.skip(f"{outside} does not exist here")
    # the recorded digest is the real one: a verify that hashed the file would find it intact
    _edit_records(run_copy, "report", {name: sha256_file(outside)})
    one_error_line(cli("verify", run_copy), f"names '{name}', outside the run directory")
    one_error_line(cli("report", "--output", run_copy), "stages.json is damaged")
    records = json.loads((run_copy / "stages.json").read_text())
    del records["report"]["outputs"][name]
    (run_copy / "stages.json").write_text(json.dumps(records))
    _edit_records(run_copy, "report", {})
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": sha256_file(outside), "bytes": 1}
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    one_error_line(cli("verify", run_copy), "manifest.json is damaged")


def test_an_artifact_index_naming_a_file_outside_is_refused(run_copy, tmp_path):
    index_path = run_copy / "artifacts" / "artifacts.json"
    index = json.loads(index_path.read_text())
    entry = next(e for e in index["artifacts"] if e["file"].endswith(".tflite"))
    shutil.copy(run_copy / "artifacts" / entry["file"], tmp_path / "users.tflite")
    entry["file"] = "../../users.tflite"
    index_path.write_text(json.dumps(index))
    _edit_records(run_copy, "export", {"artifacts/artifacts.json": sha256_file(index_path)})
    one_error_line(cli("bench", "--output", run_copy, "--force"), "../../users.tflite' is not a name inside")


def test_a_recorded_output_replaced_by_a_link_is_refused_and_a_users_link_is_not_followed(run_copy, tmp_path):
    outside = tmp_path / "model-copy.keras"
    shutil.copy(run_copy / "model.keras", outside)
    (run_copy / "model.keras").unlink()
    (run_copy / "model.keras").symlink_to(outside)  # same bytes: a verify that followed it finds it intact
    one_error_line(cli("verify", run_copy), "model.keras' is a symbolic link")
    (run_copy / "model.keras").unlink()
    shutil.copy(outside, run_copy / "model.keras")
    (tmp_path / "diary.txt").write_text("mine")
    (run_copy / "diary-link.txt").symlink_to(tmp_path / "diary.txt")  # the user's own link beside the run
    result = cli("report", "--output", run_copy, "--force")
    assert result.exit_code == 0, result.output
    assert "diary-link.txt" not in json.loads((run_copy / "manifest.json").read_text())["files"]
    assert cli("verify", run_copy).exit_code == 0


# ------------------------------------------------------------------ only the marker makes a run directory


def test_a_folder_with_a_stages_json_but_no_marker_is_not_a_run_directory(tmp_path):
    folder = tmp_path / "my-project"
    folder.mkdir()
    (folder / "stages.json").write_text("{}")
    (folder / "config.yaml").write_text("seed: 3\n")  # the user's own edgepipe configuration
    (folder / "report.md").write_text("# my report\n")
    before = _tree(folder)
    for args in (["report", "--output", folder], ["run", "--data", "builtin:digits", "--output", folder]):
        one_error_line(cli(*args), "not an edgepipe run directory")
    (folder / ".edgepipe-run").symlink_to(folder / "report.md")  # a marker must be a file of its own
    one_error_line(cli("report", "--output", folder), "not an edgepipe run directory")
    one_error_line(cli("verify", folder), "not an edgepipe run directory")
    assert _tree(folder) == before


# ------------------------------------------------------------------ full disks and read-only folders


def test_a_full_disk_while_saving_the_model_is_one_line_and_nothing_is_recorded(small_disk, tmp_path):
    from edgepipe import config as cfg

    disk = small_disk("256k")  # room for the dataset index and labels, not for the network
    run = disk / "run"
    run.mkdir()
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.to_yaml(cfg.from_dict({}, tiny_overrides(run))))
    result = cli("build", config, "--output", run)
    one_error_line(result, f"cannot write {run / 'model_initial.keras'}: No space left on device")
    assert "Free space or choose another --output" in result.output
    assert not (run / "stages.json").exists() and not (run / "model_initial.keras").exists()
    assert _leftovers(disk) == []


def test_a_full_disk_in_a_finished_run_changes_nothing(small_disk, run_copy):
    disk = small_disk("64m")
    run = Path(shutil.copytree(run_copy, disk / "run"))
    before = _tree(run)
    _fill(disk, leave_bytes=3 * 4096)  # a page for the lock, one for config.yaml, none for the reports
    result = cli("report", "--output", run, "--force")
    one_error_line(result, "No space left on device")
    assert f"cannot write {run}" in result.output
    rewritten = ("config.yaml", ".edgepipe-lock")  # as each command does; emptied, the lock is free
    assert {k: v for k, v in _tree(run).items() if k not in rewritten} == {
        k: v for k, v in before.items() if k not in rewritten
    }
    assert _leftovers(disk) == []


@pytest.fixture
def read_only_run(small_disk, run_copy, tmp_path):
    """A finished run in a folder nothing can be written to: a read-only mount as root, else chmod."""
    if ROOT:
        disk = small_disk("64m")
        run = Path(shutil.copytree(run_copy, disk / "run"))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        yield run
        return
    for folder in [run_copy, *(p for p in run_copy.rglob("*") if p.is_dir())]:
        folder.chmod(0o555)
    yield run_copy
    for folder in [run_copy, *(p for p in run_copy.rglob("*") if p.is_dir())]:
        folder.chmod(0o755)


def test_a_read_only_run_directory_is_one_line_for_every_command(read_only_run):
    before = _tree(read_only_run)
    for args in (["report"], ["run"], ["run", "--force"], ["export"]):
        result = cli(*args, "--output", read_only_run)
        one_error_line(result, f"cannot write {read_only_run / '.edgepipe-lock'}")
        assert "Choose a writable place" in result.output
    assert _tree(read_only_run) == before


# ------------------------------------------------------------------ SIGTERM unwinds like Ctrl-C

SMALL_RUN = {
    "data": {"path": "builtin:digits", "classes": ["0", "1"], "max_per_class": 20},
    "model": {"arch": "lenet5", "weights": "none", "input_size": 32},
    "train": {"strategy": "full", "epochs": 2},
    "export": {"formats": ["tflite-fp32"], "calibration_size": 8},
    "bench": {"warmup": 1, "warmup_s": 0.0, "min_iterations": 3, "min_duration_s": 0.0, "memory": False},
}


def test_sigterm_says_interrupted_releases_the_lock_and_leaves_nothing_half_written(tmp_path):
    import yaml

    from edgepipe import api

    run = tmp_path / "run"
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL_RUN))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    process = subprocess.Popen(
        [sys.executable, "-m", "edgepipe", "run", str(config), "--output", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines = []
    for line in process.stdout:  # the build stage is recorded; the signal lands in training or just after
        lines.append(line)
        if line.startswith("[train]"):
            process.send_signal(signal.SIGTERM)
            break
    lines += process.stdout.readlines()
    output = "".join(lines)
    assert process.wait(timeout=120) == 143, output
    assert output.rstrip().endswith("interrupted") and "Traceback" not in output
    assert (run / ".edgepipe-lock").read_bytes() == b""  # the holder was cleared...
    fd = os.open(run / ".edgepipe-lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ...and the lock is free
    finally:
        os.close(fd)
    assert _leftovers(run) == []
    assert "build" in json.loads((run / "stages.json").read_text())
    verified = api.verify(run)  # every file is one a finished stage recorded, as it recorded it
    assert verified.clean and verified.unrecorded == [], verified
