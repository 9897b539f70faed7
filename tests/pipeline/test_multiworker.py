"""Two local workers train under MultiWorkerMirroredStrategy: every strategy, pretraining and the
from-scratch baseline. Worker 0 writes the run directory; worker 1 trains and writes nothing there.

One run is built in this process. Then two pairs of worker processes run at once on 127.0.0.1:
``edgepipe train`` on each worker (feature extraction on disk-cached features, with the baseline),
and this file run as a script, which joins its cluster once and runs the build stage (pretraining)
and the train stage for every other strategy in turn. Each worker has its own copy of the run
directory, so what worker 1 writes can be told apart from what worker 0 writes. One more process
trains with MirroredStrategy over two logical CPUs: two replicas in one process, as on two GPUs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TIMEOUT_S = 300
RESULT = "multiworker result: "
DISTRIBUTION = {"strategy": "multi-worker-mirrored", "workers": 2, "replicas": 2, "task_index": 0}

#: the run both pairs start from: LeNet-5 on three digit classes, a head on disk-cached features, and the baseline
BASE = {
    "data.path": "builtin:digits",
    "data.classes": ["0", "1", "2"],
    "data.max_per_class": 10,
    "data.val_fraction": 0.3,
    "model.arch": "lenet5",
    "model.weights": "none",
    "model.input_size": 32,
    "model.channels": 1,
    "train.strategy": "feature-extraction",
    "train.epochs": 2,
    "train.batch_size": 8,
    "train.learning_rate": 0.01,
    "train.feature_cache": "disk",
    "train.baseline_from_scratch": True,
    "train.baseline_epochs": 1,
}

#: train-stage cases of the worker script: overrides of BASE
TRAIN_CASES = {
    "feature-extraction-augmented": {"train.epochs": 1, "train.augment.translation": 0.1},  # not cached
    "fine-tune": {
        "train.strategy": "fine-tune",
        "train.epochs": 1,
        "train.fine_tune_epochs": 1,
        "train.fine_tune_layers": 2,
        "train.class_weight": "balanced",
        "train.label_smoothing": 0.1,
    },
    "full": {"train.strategy": "full", "train.lr_schedule": "piecewise", "train.lr_boundaries": [1]},
    "auto": {"train.strategy": "auto", "train.epochs": 1},
    "classifier": {"train.strategy": "classifier"},
}
#: the build stage with a pretrain section, run on both workers by the script
PRETRAIN = {
    "pretrain.data.path": "builtin:digits",
    "pretrain.data.classes": ["3", "4"],
    "pretrain.data.max_per_class": 10,
    "pretrain.epochs": 1,
    "pretrain.batch_size": 8,
}


# ------------------------------------------------------------------ the worker script


def _worker(spec_path: str) -> None:
    """One worker: join the cluster once, then run each case's stage in this worker's directories.

    Every distributed fit is recorded by digests of the trainable weights before and after it:
    the workers must end every fit holding the same weights, and the fit must have changed them.
    """
    from edgepipe import config as cfg
    from edgepipe.pipeline import build, train
    from edgepipe.pipeline.rundir import RunDir
    from edgepipe.training import controls

    spec = json.loads(Path(spec_path).read_text())
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    fits: list[list[str]] = []
    fit = controls._fit_distributed

    def recorded(model, *args, **kwargs):
        before = _digest(model.trainable_weights)
        history = fit(model, *args, **kwargs)
        fits.append([before, _digest(model.trainable_weights)])
        return history

    controls._fit_distributed = recorded
    outcome = {}
    for case in spec["cases"]:
        config = cfg.load(case["config"], case["overrides"])
        stage = build.STAGE if case["stage"] == "build" else train.STAGE
        print(f"== {case['name']}", flush=True)
        fits.clear()
        try:
            stage.run(config, RunDir(case["runs"][index]), lambda line: print(line, flush=True))
            end = "returned"
        except BaseException as exc:  # noted, so that the other cases still run and the peer is not left waiting
            end = f"{type(exc).__name__}: {exc}"
        outcome[case["name"]] = {"end": end, "fits": list(fits)}
    print(RESULT + json.dumps(outcome), flush=True)


def _two_replicas() -> None:
    """MirroredStrategy over two logical CPUs (as over two GPUs): one process, two replicas."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from edgepipe.architectures import build_classifier
    from edgepipe.config import DataConfig, TrainConfig
    from edgepipe.data import make_index, materialize
    from edgepipe.training.controls import scope
    from edgepipe.training.strategies import STRATEGIES

    dataset = materialize(
        make_index(DataConfig(path="builtin:digits", classes=["0", "1", "2"], max_per_class=9, val_fraction=0.3), 0),
        32,
        1,
    )
    config = TrainConfig(
        strategy="fine-tune",
        epochs=1,
        fine_tune_epochs=2,
        fine_tune_layers=2,
        batch_size=4,
        class_weight="balanced",
        early_stopping_patience=1,
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with scope(strategy):  # fine-tuning: two fits, class weights, early stopping, on 27 images (odd: padded)
        model = build_classifier("lenet5", 3, 32, 1, None, "none", seed=0)
        outcome = STRATEGIES.get("fine-tune").fn(model, dataset, config, 0, print)
    print(RESULT + json.dumps({"replicas": strategy.num_replicas_in_sync, "history": outcome["history"]}), flush=True)


def _digest(variables) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(v.numpy()).tobytes() for v in variables)).hexdigest()


# ------------------------------------------------------------------ launching the pairs


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start_pair(name: str, command: list[str], runs: list[Path], logs: Path) -> list[subprocess.Popen]:
    """Start ``command`` (with {run} filled in per worker) on both workers of a new local cluster."""
    ports = _free_ports(2)
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "CUDA_VISIBLE_DEVICES": "",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps(
                {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
            ),
        }
        log = open(logs / f"{name}-{index}.log", "w")
        procs.append(
            subprocess.Popen(
                [part.format(run=runs[index]) for part in command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[2],
            )
        )
        log.close()
    return procs


def _wait(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    """Exit codes of every process. Once one fails, or the time is up, the others are killed:
    a worker whose peer is gone would wait for it."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs]


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content digest (folders as 'dir')."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def _copies(source: Path, target: Path) -> list[Path]:
    runs = [target / "w0", target / "w1"]
    for run in runs:
        shutil.copytree(source, run)
    return runs


def test_two_workers_train_with_every_strategy_and_the_chief_alone_writes(tmp_path, monkeypatch):
    # one test, so that pytest-xdist starts a single cluster
    monkeypatch.delenv("TF_CONFIG", raising=False)  # the build here runs on its own
    cluster = _run_cluster(tmp_path)
    _check_exits(cluster)
    _check_cli_chief(cluster["cli_runs"][0])
    _check_unchanged(cluster, cluster["cli_runs"][1])
    _check_strategies(cluster)
    _check_script_runs(cluster)


def _run_cluster(root: Path) -> dict:
    """Build once here, then run both pairs of workers at once; returns what the checks inspect."""
    from edgepipe import config as cfg
    from edgepipe.pipeline.sequence import run_stages

    base = run_stages(cfg.from_dict({}, {**BASE, "output": str(root / "base")}), ["build"], echo=lambda s: None).path
    classifier = run_stages(
        cfg.from_dict(
            {},
            {
                **BASE,
                "output": str(root / "classifier"),
                "model.path": str(base / "model_initial.keras"),
                "model.labels": str(base / "labels.txt"),
                "train.strategy": "classifier",
            },
        ),
        ["build"],
        echo=lambda s: None,
    ).path
    cli_runs = _copies(base, root / "cli")
    cases = [
        {
            "name": "build-pretrain",
            "stage": "build",
            "config": str(base / "config.yaml"),
            "overrides": PRETRAIN,
            "runs": [str(root / "build-pretrain" / w) for w in ("w0", "w1")],
        }
    ]
    for name, overrides in TRAIN_CASES.items():
        source = classifier if name == "classifier" else base
        runs = _copies(source, root / name)
        cases.append(
            {
                "name": name,
                "stage": "train",
                "config": str(source / "config.yaml"),
                "runs": [str(r) for r in runs],
                "overrides": {"train.baseline_from_scratch": False, "train.feature_cache": "memory", **overrides},
            }
        )
    spec = root / "spec.json"
    spec.write_text(json.dumps({"cases": cases}))
    before = {
        str(run): (_snapshot(run), _mtimes(run)) for case in cases for run in map(Path, case["runs"]) if run.exists()
    }
    before.update({str(run): (_snapshot(run), _mtimes(run)) for run in cli_runs})
    procs = _start_pair("cli", [sys.executable, "-m", "edgepipe", "train", "--output", "{run}"], cli_runs, root)
    procs += _start_pair("script", [sys.executable, __file__, str(spec)], [root, root], root)
    codes = _wait(procs, TIMEOUT_S)
    logs = {
        name: (root / f"{name}.log").read_text(errors="replace") for name in ("cli-0", "cli-1", "script-0", "script-1")
    }
    return {"root": root, "codes": codes, "logs": logs, "cases": cases, "before": before, "cli_runs": cli_runs}


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def _result(cluster, worker: int) -> dict:
    lines = [l for l in cluster["logs"][f"script-{worker}"].splitlines() if l.startswith(RESULT)]
    assert lines, cluster["logs"][f"script-{worker}"][-3000:]
    return json.loads(lines[-1][len(RESULT) :])


def _check_exits(cluster) -> None:
    for (name, log), code in zip(cluster["logs"].items(), cluster["codes"]):
        assert code == 0, f"{name} exited {code}:\n{log[-3000:]}"
        assert "unhealthy" not in log, f"{name} saw a worker leave before the end:\n{log[-3000:]}"
    says = "worker 1: training done; worker 0 writes the results"
    assert says in cluster["logs"]["cli-1"] and says not in cluster["logs"]["cli-0"]
    assert cluster["logs"]["script-1"].count("worker 0 writes the results") == len(cluster["cases"])
    assert "writes the results" not in cluster["logs"]["script-0"]


def _check_cli_chief(chief: Path) -> None:
    training = json.loads((chief / "training.json").read_text())
    assert training["distribution"] == DISTRIBUTION
    assert training["features_cached"] and training["feature_cache"]["location"] == "disk"
    assert len(training["history"]["loss"]) == 2 and np.isfinite(training["history"]["loss"]).all()
    assert np.isfinite(training["baseline_from_scratch"]["history"]["loss"]).all()
    assert (chief / "model.keras").is_file() and list((chief / "cache").glob("features-*.npy"))
    assert "train" in json.loads((chief / "stages.json").read_text())


def _check_unchanged(cluster, other: Path) -> None:
    """Worker 1's copy of the run directory: no file added, changed or even rewritten."""
    snapshot, mtimes = cluster["before"][str(other)]
    assert _snapshot(other) == snapshot, other
    assert _mtimes(other) == mtimes, other


def _check_strategies(cluster) -> None:
    results = [_result(cluster, w) for w in (0, 1)]
    for case in cluster["cases"]:
        name = case["name"]
        assert results[0][name]["end"] == results[1][name]["end"] == "returned", name
        fits = results[0][name]["fits"]
        assert len(fits) == {"fine-tune": 2, "classifier": 0}.get(name, 1), name
        assert all(before != after for before, after in fits), name  # every fit changed the weights...
        assert results[1][name]["fits"] == fits, name  # ...alike on both workers
    for name in TRAIN_CASES:
        training = json.loads((cluster["root"] / name / "w0" / "training.json").read_text())
        assert training["distribution"] == DISTRIBUTION, name
        assert training["strategy"] == TRAIN_CASES[name].get("train.strategy", "feature-extraction")
        if name != "classifier":
            assert training["history"]["loss"] and np.isfinite(training["history"]["loss"]).all(), name
    full = json.loads((cluster["root"] / "full" / "w0" / "training.json").read_text())
    assert full["history"]["learning_rate"] == pytest.approx([0.01, 0.001])  # the schedule ran on the workers


def _check_script_runs(cluster) -> None:
    for case in cluster["cases"]:
        chief, other = map(Path, case["runs"])
        if case["stage"] == "build":
            assert "pretrain" in json.loads((chief / "build.json").read_text())
            assert not other.exists(), case["name"]
        else:
            assert (chief / "training.json").is_file(), case["name"]
            _check_unchanged(cluster, other)


def test_one_process_with_two_replicas_trains(tmp_path):
    log = tmp_path / "two-replicas.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--two-replicas"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
    code = _wait([proc], TIMEOUT_S)[0]
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    result = json.loads([l for l in text.splitlines() if l.startswith(RESULT)][-1][len(RESULT) :])
    assert result["replicas"] == 2
    assert result["history"]["loss"] and np.isfinite(result["history"]["loss"]).all()


# ------------------------------------------------------------------ without a cluster


def test_replica_shares_are_equal_and_cover_every_image():
    from edgepipe.training.controls import _shares

    for n, batch, replicas in [(41, 8, 2), (9, 4, 4), (1, 8, 2), (64, 16, 4)]:
        steps = _shares(n, batch, replicas, seed=3, epoch=1)
        seen = np.concatenate([part for step in steps for part in step])
        again = np.concatenate([part for step in _shares(n, batch, replicas, seed=3, epoch=1) for part in step])
        assert np.array_equal(seen, again)  # every worker draws the same shuffle
        assert set(seen) == set(range(n)) and len(seen) - n < replicas
        for step in steps:
            assert len({len(part) for part in step}) == 1 and len(step[0]) > 0
        validation = _shares(n, batch, replicas)
        assert all(np.array_equal(step[0], part) for step in validation for part in step)
        assert np.array_equal(np.concatenate([step[0] for step in validation]), np.arange(n))


def test_chief_and_distribution_record_follow_tf_config():
    from edgepipe.errors import ConfigError
    from edgepipe.training.controls import distribution_record, is_chief

    def tf_config(index, chief=False):
        cluster = {"worker": ["a:1", "b:1"], **({"chief": ["c:1"]} if chief else {})}
        return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})

    assert is_chief("") and is_chief(tf_config(0)) and not is_chief(tf_config(1))
    assert not is_chief(tf_config(0, chief=True))
    assert is_chief(
        json.dumps({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}})
    )
    assert distribution_record("default", None, "") == {
        "strategy": "default",
        "workers": 1,
        "replicas": 1,
        "task_index": 0,
    }

    class TwoReplicas:
        num_replicas_in_sync = 2

    record = distribution_record("multi-worker-mirrored", TwoReplicas(), tf_config(1))
    assert record == {**DISTRIBUTION, "task_index": 1}
    with pytest.raises(ConfigError, match="not one of its cluster's tasks"):
        is_chief(tf_config(2))


def test_a_batch_that_does_not_split_over_the_replicas_is_refused():
    from edgepipe.errors import ConfigError
    from edgepipe.training.controls import check_batch_size

    check_batch_size(8, 2)
    with pytest.raises(ConfigError, match="train.batch_size \\(9\\) does not split evenly over 2 replicas"):
        check_batch_size(9, 2, "train.batch_size")


if __name__ == "__main__":
    _two_replicas() if sys.argv[1] == "--two-replicas" else _worker(sys.argv[1])
