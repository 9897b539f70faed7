"""An image classifier brought from PyTorch: a torch.nn.Module through the API and a torch.export program (.pt2)
through the command line, exported to ONNX by PyTorch, every artifact verified against the PyTorch module itself;
bad programs and modules refused in one line. PyTorch is the ``edgepipe[torch]`` extra: without it these tests are
skipped, except those showing edgepipe works, and says what to install, without it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgepipe.cli import main
from edgepipe.errors import EdgepipeError
from tests.conftest import make_image_folder

CLASSES = ("a_red", "b_green", "c_blue")  # each class's dominant colour is its channel (make_image_folder)
SIZE = 32
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PREPROCESSING = {"channels": "rgb", "scale": 255, "mean": list(MEAN), "std": list(STD)}
ROOT = Path(__file__).resolve().parents[2]


def _torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'edgepipe[torch]')")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), classes=CLASSES, per_class=10, size=SIZE)


def _tiny(seed: int = 0):
    """conv -> relu -> pool -> linear on NCHW input normalized by the ImageNet mean and std: the convolution
    passes each colour through (plus five channels of noise), the linear layer turns colour c into class c."""
    torch = _torch()

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 1)
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))

    torch.manual_seed(seed)
    module = Tiny()
    with torch.no_grad():
        module.conv.weight[:3] = torch.eye(3)[:, :, None, None]
        module.conv.weight[3:] *= 0.1
        module.conv.bias.zero_()
        module.fc.weight.zero_()
        module.fc.weight[:, :3] = 2 * torch.eye(3)
        module.fc.bias[:] = torch.tensor([1.0, 0.0, 0.0])  # grey images (no colour) are class 0, not a near tie
    return module


def _normalized(pixels: np.ndarray) -> np.ndarray:
    """Raw NHWC pixels as the module was trained on them: NCHW, (x / 255 - mean) / std."""
    return ((pixels / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)


def _folder_pixels(folder: Path) -> np.ndarray:
    from PIL import Image

    return np.stack(
        [
            np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE)), np.uint8)
            for name in CLASSES
            for p in sorted((folder / name).iterdir())
        ]
    )


def _module_probabilities(module, pixels: np.ndarray) -> np.ndarray:
    torch = _torch()
    with torch.no_grad():
        return torch.softmax(module.eval()(torch.from_numpy(_normalized(pixels))), 1).numpy()


def _run_onnx(path: Path, pixels: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": pixels.astype(np.float32)})[0]


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output


def test_module_exports_and_each_artifact_is_verified_against_the_module(images, tmp_path):
    import edgepipe

    module = _tiny()
    module.train()  # edgepipe exports and judges it in eval mode, and gives it back as it was
    exported = edgepipe.export(
        module,
        ["onnx-fp32", "onnx-int8", "openvino-fp32"],
        calibration=images,
        output=tmp_path / "out",
        input_shape=(1, 3, SIZE, SIZE),
        preprocessing=PREPROCESSING,
        echo=lambda line: None,
    )
    assert module.training
    index = json.loads(exported.index.read_text())
    assert index["source"]["kind"] == "pytorch" and index["source"]["given_as"] == "PyTorch module"
    assert index["source"]["reference"].startswith("the PyTorch module, run by torch")
    assert index["source"]["layout"] == "nchw" and index["source"]["softmax_added"] is True
    for name in ("onnx-fp32", "onnx-int8", "openvino-fp32"):
        record = exported[name]
        assert record.status == "ok" and record.verification["passed"], record
        assert record.verification["images"] > 0
    assert exported["onnx-fp32"].verification["max_abs_diff"] < 1e-4
    assert exported["onnx-fp32"].file == "Tiny-onnx-fp32.onnx"

    # the file takes raw NHWC pixels and gives what the module gives on them, normalized as it was trained
    pixels = _folder_pixels(images)
    expected = _module_probabilities(module, pixels)
    assert np.abs(_run_onnx(exported.path("onnx-fp32"), pixels) - expected).max() < 1e-4
    colour = pixels.astype(int).std(axis=-1).mean(axis=(1, 2)) > 10  # the folder holds grey images too
    labels = np.repeat(np.arange(len(CLASSES)), len(pixels) // len(CLASSES))
    assert np.mean(expected[colour].argmax(1) == labels[colour]) == 1.0


def test_the_reference_is_the_module_not_the_onnx_it_was_exported_to():
    """What artifacts are judged against runs the module: changed after the export, the reference follows it,
    while the exported graph does not."""
    torch = _torch()
    from edgepipe.backends.onnxruntime.torch_source import read_torch_module
    from edgepipe.pixels import resolve

    module = _tiny()
    source = read_torch_module(module, resolve(PREPROCESSING), input_shape=(1, 3, SIZE, SIZE))
    pixels = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.uint8)
    before = source.reference(pixels)
    graph = source.onnx.wrapped.SerializeToString()
    assert np.abs(_run_onnx_bytes(graph, pixels) - before).max() < 1e-5
    with torch.no_grad():
        module.fc.bias[:] = torch.tensor([5.0, 0.0, 0.0])
    after = source.reference(pixels)
    assert np.abs(after - _module_probabilities(module, pixels)).max() < 1e-5
    assert np.abs(after - before).max() > 0.1
    assert np.abs(_run_onnx_bytes(graph, pixels) - before).max() < 1e-5


def _run_onnx_bytes(graph: bytes, pixels: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": pixels.astype(np.float32)})[0]


def _save_program(module, path: Path, dynamic_batch: bool = True) -> Path:
    torch = _torch()
    example = (torch.zeros(2 if dynamic_batch else 1, 3, SIZE, SIZE),)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    torch.export.save(torch.export.export(module.eval(), example, dynamic_shapes=shapes), str(path))
    return path


def test_a_torch_export_program_exports_through_the_command_line(images, tmp_path):
    module = _tiny(seed=1)
    program = _save_program(module, tmp_path / "tiny.pt2")
    out = tmp_path / "out"
    result = _invoke(
        "export",
        program,
        "--preprocessing",
        "torch",
        "--format",
        "onnx-fp32",
        "--format",
        "openvino-fp32",
        "--calibration-data",
        images,
        "--output",
        out,
    )
    assert result.exit_code == 0, result.output
    index = json.loads((out / "artifacts.json").read_text())
    assert index["source"]["given_as"] == "torch.export program" and index["source_model"] == str(program)
    records = {r["format"]: r for r in index["artifacts"]}
    assert all(r["status"] == "ok" and r["verification"]["passed"] for r in records.values()), records
    pixels = _folder_pixels(images)
    assert (
        np.abs(_run_onnx(out / records["onnx-fp32"]["file"], pixels) - _module_probabilities(module, pixels)).max()
        < 1e-4
    )


def _not_a_program(path: Path) -> Path:
    torch = _torch()
    torch.save(_tiny().state_dict(), str(path))  # a checkpoint, not a program, under the program's suffix
    return path


def _with_pickled_object(path: Path, tmp_path: Path) -> Path:
    """A program whose sample inputs hold an object only pickle loads (loading it runs that object's code)."""
    import io
    import zipfile
    from fractions import Fraction

    torch = _torch()
    valid = zipfile.ZipFile(_save_program(_tiny(), tmp_path / "valid.pt2"))
    name = next(n for n in valid.namelist() if n.endswith("sample_inputs/model.pt"))
    example = torch.zeros(2, 3, SIZE, SIZE)
    example.note = Fraction(1, 2)  # a tensor's attributes are pickled with it
    buffer = io.BytesIO()
    torch.save(((example,), {}), buffer)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for entry in valid.namelist():
            out.writestr(entry, buffer.getvalue() if entry == name else valid.read(entry))
    return path


def test_a_program_whose_loading_runs_code_needs_unsafe_load(images, tmp_path):
    path = _with_pickled_object(tmp_path / "model.pt2", tmp_path)
    flags = ["--preprocessing", "torch", "--format", "onnx-fp32", "--calibration-data", images]
    _one_line_error(
        _invoke("export", path, *flags, "--output", tmp_path / "refused"),
        "'model.pt2' holds objects only pickle can load, and loading them runs code",
    )
    assert not (tmp_path / "refused").exists()
    trusted = _invoke("export", path, *flags, "--output", tmp_path / "trusted", "--unsafe-load")
    assert trusted.exit_code == 0, trusted.output


@pytest.mark.parametrize(
    "case, message",
    [
        ("state dict", "'model.pt2' is not a torch.export program"),
        ("not a zip", "'model.pt2' is not a torch.export program"),
        ("fixed batch", "'model.pt2' was exported with a fixed batch size of 1"),
    ],
)
def test_bad_programs_are_one_line_errors(case, message, images, tmp_path):
    path = tmp_path / "model.pt2"
    if case == "state dict":
        _not_a_program(path)
    elif case == "not a zip":
        _torch()
        path.write_bytes(b"not a program\n")
    else:
        _save_program(_tiny(), path, dynamic_batch=False)
    out = tmp_path / "out"
    _one_line_error(
        _invoke(
            "export",
            path,
            "--preprocessing",
            "torch",
            "--format",
            "onnx-fp32",
            "--calibration-data",
            images,
            "--output",
            out,
        ),
        message,
    )
    assert not out.exists() and path.exists()


def test_modules_that_do_not_take_an_image_batch_are_refused(tmp_path):
    torch = _torch()
    import edgepipe

    flat = torch.nn.Linear(16, 3)
    with pytest.raises(EdgepipeError, match=r"input_shape of Linear is \[1, 16\]: not an image batch"):
        edgepipe.export(flat, ["onnx-fp32"], output=tmp_path / "flat", input_shape=(1, 16), preprocessing="torch")

    class OneImage(torch.nn.Module):  # every batch becomes one row
        def forward(self, x):
            return x.mean((2, 3)).reshape(1, -1)

    class TwoImages(torch.nn.Module):  # torch.export sees the batch fixed at its example's
        def forward(self, x):
            return x.mean((2, 3)).view(2, 3)

    for module, message in [
        (OneImage(), "the output of the PyTorch module OneImage has a fixed batch size of 1"),
        (TwoImages(), "the PyTorch module TwoImages fixes its batch size"),
    ]:
        with pytest.raises(EdgepipeError, match=message):
            edgepipe.export(
                module, ["onnx-fp32"], output=tmp_path / "fixed", input_shape=(1, 3, SIZE, SIZE), preprocessing="torch"
            )
    with pytest.raises(EdgepipeError, match="needs its input shape"):
        edgepipe.export(_tiny(), ["onnx-fp32"], output=tmp_path / "none", preprocessing="torch")
    assert not any(tmp_path.iterdir())


def test_a_program_without_pytorch_installed_names_the_extra(tmp_path, images, monkeypatch):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"PK\x03\x04")
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` does where it is not installed
    _one_line_error(
        _invoke(
            "export",
            path,
            "--preprocessing",
            "torch",
            "--format",
            "onnx-fp32",
            "--calibration-data",
            images,
            "--output",
            tmp_path / "out",
        ),
        "pip install 'edgepipe[torch]'",
    )


def test_edgepipe_and_its_help_never_import_pytorch():
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom edgepipe.cli import main\nimport edgepipe.backends\n"
        "edgepipe.backends.load()\nresult = CliRunner().invoke(main, ['export', '--help'])\n"
        "assert result.exit_code == 0 and '.pt2' in result.output, result.output\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
