"""A new backend is one package: registered by an entry point, it appears in 'edgepipe formats' and is
measured by 'edgepipe bench' with nothing in edgepipe touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

TOY_BACKEND = textwrap.dedent('''
    """A toy engine: a linear classifier over the mean colour of an image, stored as JSON."""
    import json
    from pathlib import Path

    import numpy as np

    from edgepipe.backends.base import Backend
    from edgepipe.backends.runner import InputSpec, Runner

    TOY = Backend("toy", packages=("numpy",), description="JSON linear classifier")
    TOY.container("toy", suffixes=(".toy",), default_engine="toy-numpy", description="toy model",
                  read_info=lambda path: {k: json.loads(Path(path).read_text())[k] for k in ("format", "precision", "labels")})


    @TOY.format("toy-fp32", container="toy", precision="fp32", description="toy: linear classifier on mean colour")
    def export_toy(ctx, path):
        raise NotImplementedError("the toy format is written by hand in this test")


    @TOY.engine("toy-numpy", reads=("toy",), devices=("cpu",), description="numpy matrix product")
    class ToyRunner(Runner):
        def _activate(self):
            spec = json.loads(self.path.read_text())
            self.weights, self.size = np.asarray(spec["weights"], np.float32), spec["size"]

        def input_spec(self):
            return InputSpec("image", (None, self.size, self.size, 3), "float32")

        def versions(self):
            return {"numpy": np.__version__}

        def _infer(self, batch):
            logits = batch.mean(axis=(1, 2)) @ self.weights
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
''')


def _plugin(tmp_path: Path) -> dict:
    site = tmp_path / "site"
    (site / "toy_backend-0.1.dist-info").mkdir(parents=True)
    (site / "toy_backend.py").write_text(TOY_BACKEND)
    (site / "toy_backend-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: toy-backend\nVersion: 0.1\n"
    )
    (site / "toy_backend-0.1.dist-info" / "entry_points.txt").write_text("[edgepipe.backends]\ntoy = toy_backend\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def _edgepipe(*args, env, cwd):
    return subprocess.run(
        [sys.executable, "-m", "edgepipe", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_a_backend_from_a_plugin_is_listed_and_benchmarked(tmp_path):
    from tests.conftest import make_image_folder

    env = _plugin(tmp_path)
    listed = _edgepipe("formats", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "toy-fp32" in listed.stdout and "toy-numpy (reads toy" in listed.stdout

    # red images are class 0, green ones class 1: the toy weights separate them by mean colour
    data = make_image_folder(tmp_path / "data", classes=("red", "green"), per_class=4, size=16)
    model = tmp_path / "model.toy"
    model.write_text(
        json.dumps(
            {
                "format": "toy-fp32",
                "precision": "fp32",
                "labels": ["red", "green"],
                "size": 16,
                "weights": np.array([[0.1, -0.1], [-0.1, 0.1], [0.0, 0.0]]).tolist(),
            }
        )
    )
    out = tmp_path / "toy.json"
    result = _edgepipe(
        "bench",
        str(model),
        "--data",
        str(data),
        "--min-iterations",
        "3",
        "--min-duration",
        "0",
        "--warmup",
        "1",
        "--warmup-time",
        "0",
        "--output",
        str(out),
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(out.read_text())["records"]
    assert record["engine"] == "toy-numpy" and record["format"] == "toy-fp32" and record["status"] == "ok"
    assert record["top1"] == 1.0 and record["latency_ms"]["p50"] > 0
