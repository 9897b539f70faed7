"""Image files as they come off disks and phones: EXIF orientation applied on every decode path, and entries that
are not regular files (FIFOs, sockets, devices, links to them) skipped and listed without being opened."""

import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from edgepipe.config import DataConfig
from edgepipe.data import make_index, materialize
from edgepipe.errors import DataError
from tests.conftest import make_image_folder

SIZE = 16


def _sideways_photo(path: Path, orientation: int) -> None:
    """A 40x20 JPEG stored sideways, as a portrait phone photo is: red on the left, blue on the right, with an EXIF
    Orientation tag. Upright (orientation 6: turn clockwise; 8: counter-clockwise) red is on top (6) or bottom (8)."""
    from PIL import Image

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20, 0] = 255
    pixels[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=95, exif=exif)


def _phone_folder(root: Path) -> Path:
    for name in ("portrait", "other"):
        for i in range(2):
            _sideways_photo(root / name / f"IMG_{i}.jpg", 6)
    return root


def _assert_upright(images: np.ndarray) -> None:
    """Every image red above, blue below: the orientation was applied (stored pixels are red left, blue right)."""
    assert len(images)
    half = SIZE // 2
    for image in images.astype(int):
        top, bottom = image[: half - 2], image[half + 2 :]
        assert top[..., 0].mean() > 200 and top[..., 2].mean() < 60, "top half is not red: decoded unrotated"
        assert bottom[..., 2].mean() > 200 and bottom[..., 0].mean() < 60


def test_orientation_is_applied_by_the_dataset_loader(tmp_path):
    data = _phone_folder(tmp_path / "data")
    index = make_index(DataConfig(path=str(data), val_fraction=0.0, test_fraction=0.0), seed=0)
    assert index["summary"]["image_sizes_seen"] == {"20x40": 4}  # upright width x height
    _assert_upright(materialize(index, SIZE, 3).train.images)


def test_orientation_8_turns_the_other_way(tmp_path):
    from edgepipe.data.folders import decode

    _sideways_photo(tmp_path / "p.jpg", 8)
    image = decode(tmp_path / "p.jpg", SIZE, 3).astype(int)
    assert image[: SIZE // 2 - 2, :, 2].mean() > 200 and image[SIZE // 2 + 2 :, :, 0].mean() > 200  # blue on top


def test_orientation_is_applied_to_the_calibration_set(tmp_path):
    from edgepipe.calibration import draw
    from edgepipe.standalone.export import _calibration_from

    _, pool, validation = _calibration_from(_phone_folder(tmp_path / "data"), SIZE, 3, 0)
    _assert_upright(draw(pool[0], pool[1], 8, seed=0).images)
    _assert_upright(validation[0])


def test_orientation_is_applied_by_the_standalone_bench_folder_reader(tmp_path):
    from edgepipe.standalone.bench import bench_images

    images, labels = bench_images(_phone_folder(tmp_path / "data"), None, (1, SIZE, SIZE, 3), seed=0)
    assert len(labels) == 4
    _assert_upright(images)


def test_every_image_file_is_opened_by_the_one_decode_module():
    """Image.open appears in one module only, so every path (folders, bundled photos) shares its rules; besides it,
    report/plots.py reads the text chunk of a PNG it may replace (whether edgepipe wrote it), never its pixels."""
    package = Path(__file__).resolve().parents[2] / "edgepipe"
    openers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "Image.open(" in p.read_text())
    assert openers == ["data/folders.py", "report/plots.py"]


def _guarded(call, fifos: list[Path], timeout: float = 120.0):
    """Run ``call`` in a thread; if it is still running after ``timeout`` (blocked opening a FIFO), release it by
    opening the FIFOs for writing, and fail instead of hanging the test run."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a waiting reader sees end of file
            except OSError:
                pass
        thread.join(10)
        pytest.fail("reading the data folder blocked on a file that is not a regular file")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_special_files_are_listed_and_never_opened(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=4, size=20)
    cat = data / "cat"
    os.mkfifo(cat / "pipe.jpg")
    os.mkfifo(tmp_path / "elsewhere.fifo")
    (cat / "to-pipe.jpg").symlink_to(tmp_path / "elsewhere.fifo")
    (cat / "zeros.png").symlink_to("/dev/zero")
    (cat / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (cat / "alias.png").symlink_to(cat / "img 0 é.png")  # a link to a regular image is read
    (cat / "nested").mkdir()
    (cat / "nested" / "to-folder").symlink_to(tmp_path)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(cat / "sock.png"))
    try:
        index = _guarded(
            lambda: make_index(DataConfig(path=str(data), val_fraction=0.0, test_fraction=0.0), seed=0),
            [cat / "pipe.jpg", tmp_path / "elsewhere.fifo"],
        )
    finally:
        server.close()
    reasons = {r["file"]: r["reason"] for r in index["rejected"]}
    assert "named pipe (FIFO)" in reasons["cat/pipe.jpg"] and "not a regular file" in reasons["cat/pipe.jpg"]
    assert "named pipe (FIFO) behind a symbolic link" in reasons["cat/to-pipe.jpg"]
    assert "character device behind a symbolic link" in reasons["cat/zeros.png"]
    assert "socket" in reasons["cat/sock.png"]
    assert "folder behind a symbolic link" in reasons["cat/nested/to-folder"]
    assert "broken symbolic link" in reasons["cat/gone.png"]
    assert index["summary"]["images_per_class"]["cat"]["train"] == 5  # four images and the link to one


def test_a_file_replaced_by_a_fifo_after_the_scan_is_an_error_not_a_hang(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=3, size=20)
    index = make_index(DataConfig(path=str(data), val_fraction=0.0, test_fraction=0.0), seed=0)
    victim = data / index["splits"]["train"][0][0]
    victim.unlink()
    os.mkfifo(victim)
    with pytest.raises(DataError, match="named pipe"):
        _guarded(lambda: materialize(index, SIZE, 3), [victim])
