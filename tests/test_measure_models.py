"""edgepipe models --measure: what each architecture costs on this device, measured once and cached."""

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgepipe.cli import main
from tests.test_remote import ssh_host  # noqa: F401  (the sshd fixture, reused)

TINY = ["--input-size", "32", "--threads", "1", "--min-iterations", "3", "--min-duration", "0"]
FORMATS = "tflite-fp32,tflite-int8"


def models(cache: Path, *args: str):
    return CliRunner().invoke(main, ["models", "--measure", *TINY, *args], env={"XDG_CACHE_HOME": str(cache)})


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Two small networks in two formats, measured into a fresh cache: (cache folder, the first call's result)."""
    cache = tmp_path_factory.mktemp("cache")
    result = models(cache, "--archs", "lenet5,mobilenet_v3_small", "--formats", FORMATS)
    assert result.exit_code == 0, result.output
    return cache, result


def test_the_table_has_measured_columns_with_units_and_conditions(measured):
    _, result = measured
    table = result.stdout
    for column in ("p50 ms", "p90 ms", "size MB", "peak MB", "params M", "MACs M", "top-1 %"):
        assert column in table
    rows = [line for line in table.splitlines() if "tflite-" in line]
    assert len(rows) == 4, table
    for line in rows:  # p50, p90, size and peak memory: four numbers after the format
        p50, p90, size, peak = (float(v) for v in line.split()[-4:])
        assert 0 < p50 <= p90 and size > 0 and peak > 0, line
    assert "lenet5" in table and "mobilenet_v3_small" in table and "68.1" in table  # published top-1 beside it
    assert "1 thread(s), batch 1, weights random" in table and "synthetic images" in table
    assert "cpu:" in table  # the device the numbers belong to
    assert "[1/2] lenet5" in result.stderr and "[2/2] mobilenet_v3_small" in result.stderr  # progress per architecture
    assert "cached" not in " ".join(rows)


def test_a_second_call_reads_the_cache_and_json_parses(measured):
    cache, first = measured
    again = models(cache, "--archs", "lenet5,mobilenet_v3_small", "--formats", FORMATS, "--json")
    assert again.exit_code == 0, again.output
    assert "exporting" not in again.stderr and "2 format(s) from the cache, 0 measured now" in again.stderr
    data = json.loads(again.stdout)
    assert [(r["arch"], r["format"]) for r in data["rows"]] == [
        ("lenet5", "tflite-fp32"),
        ("lenet5", "tflite-int8"),
        ("mobilenet_v3_small", "tflite-fp32"),
        ("mobilenet_v3_small", "tflite-int8"),
    ]
    assert all(
        r["cached"]
        and r["status"] == "ok"
        and r["p50_ms"] > 0
        and r["p90_ms"] >= r["p50_ms"]
        and r["size_mb"] > 0
        and r["peak_memory_mb"] > 0
        for r in data["rows"]
    )
    int8 = data["rows"][1]
    assert int8["size_mb"] < data["rows"][0]["size_mb"]  # the INT8 artifact really is another file
    assert data["conditions"]["threads"] == 1 and data["conditions"]["batch_size"] == 1
    assert "random" in data["weights"] and data["units"]["p50_ms"].startswith("ms")
    assert data["rows"][2]["published"]["top1"] == 68.1
    table_p50 = next(line for line in first.stdout.splitlines() if line.startswith("lenet5")).split()[8]
    assert table_p50 == f"{data['rows'][0]['p50_ms']:.3f}"  # the figures printed the first time, not new ones


def test_a_cached_table_does_not_load_tensorflow(measured):
    """A second call reads the cache without importing TensorFlow, so it prints at once."""
    import os
    import subprocess

    cache, _ = measured
    args = ["models", "--measure", *TINY, "--archs", "lenet5,mobilenet_v3_small", "--formats", FORMATS]
    code = (
        "import sys; from click.testing import CliRunner; from edgepipe.cli import main; "
        f"r = CliRunner().invoke(main, {args!r}); assert r.exit_code == 0, r.output; "
        "assert 'from the cache' in r.stderr, r.stderr; print('tensorflow' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(cache)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_force_measures_again(measured):
    cache, _ = measured
    before = json.loads(models(cache, "--archs", "lenet5", "--formats", FORMATS, "--json").stdout)["rows"]
    forced = models(cache, "--archs", "lenet5", "--formats", FORMATS, "--json", "--force")
    assert forced.exit_code == 0, forced.output
    assert "exporting" in forced.stderr
    rows = json.loads(forced.stdout)["rows"]
    assert not any(r["cached"] for r in rows)
    assert [r["measured_at"] for r in rows] != [r["measured_at"] for r in before] or [
        r["record"]["rounds"] for r in rows
    ] != [r["record"]["rounds"] for r in before]


def test_a_damaged_cache_is_measured_again_with_a_notice(tmp_path):
    cache_file = tmp_path / "edgepipe" / "measurements.json"
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text("{not json")
    result = models(tmp_path, "--archs", "lenet5", "--formats", "tflite-fp32", "--csv")
    assert result.exit_code == 0, result.output
    notices = [line for line in result.stderr.splitlines() if "could not be read" in line]
    assert len(notices) == 1 and "measuring again" in notices[0]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("arch,alpha,input_size") and lines[1].startswith("lenet5,,32,10,")
    assert json.loads(cache_file.read_text())["entries"]  # written afresh


def test_an_architecture_that_cannot_take_the_input_is_a_row_with_its_reason(tmp_path):
    result = models(tmp_path, "--archs", "alexnet", "--formats", "tflite-fp32")  # AlexNet needs at least 64 px
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("alexnet"))
    assert "skipped: cannot be built: input size 32 is too small" in row


@pytest.mark.parametrize(
    "args, message",
    [
        (["models", "--measure", "--archs", "mobilenet_v9"], "unknown architecture 'mobilenet_v9'"),
        (["models", "--archs", "lenet5"], "--archs applies to --measure"),
        (["models", "--measure", "--formats", "tflite-int9"], "unknown format"),
        (["models", "--measure", "--remote", "somewhere"], "--remote needs --threads"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(main, args, env={"XDG_CACHE_HOME": str(tmp_path)})
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not (tmp_path / "edgepipe" / "measurements.json").exists()


def test_cache_keys_separate_devices_formats_and_conditions():
    from edgepipe.choose.measure import Conditions, Network, Target, cache_key

    here = Target("here", {"device": "a", "engines": {"litert": "1"}}, bench=None)
    network = Network("lenet5", None, 32, 1, 10)
    key = cache_key(here, network, "tflite-fp32", Conditions(threads=1))
    assert key == cache_key(here, network, "tflite-fp32", Conditions(threads=1))
    assert key != cache_key(
        Target("there", {"device": "b", "engines": {"litert": "1"}}, None),
        network,
        "tflite-fp32",
        Conditions(threads=1),
    )
    assert key != cache_key(
        Target("here", {"device": "a", "engines": {"litert": "2"}}, None), network, "tflite-fp32", Conditions(threads=1)
    )
    assert key != cache_key(here, network, "tflite-int8", Conditions(threads=1))
    assert key != cache_key(here, network, "tflite-fp32", Conditions(threads=2))
    assert key != cache_key(here, Network("lenet5", None, 64, 1, 10), "tflite-fp32", Conditions(threads=1))


SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


@pytest.mark.skipif(
    SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
    reason="OpenSSH server and client are needed (apt-get install openssh-server openssh-client)",
)
def test_remote_measures_over_ssh_and_caches_per_destination(ssh_host, tmp_path):  # noqa: F811
    remote_edgepipe = str(Path(sys.executable).with_name("edgepipe"))
    args = [
        "--archs",
        "lenet5",
        "--formats",
        "tflite-fp32",
        "--remote",
        "edgepipe-test",
        "--ssh-config",
        str(ssh_host),
        "--remote-edgepipe",
        remote_edgepipe,
        "--remote-dir",
        str(tmp_path / "remote-jobs"),
        "--json",
    ]
    first = models(tmp_path, *args)
    assert first.exit_code == 0, first.output
    assert "[remote]" in first.stderr  # the remote harness's own lines
    row = json.loads(first.stdout)["rows"][0]
    assert row["status"] == "ok" and row["p50_ms"] > 0 and row["device"].startswith("edgepipe-test")
    again = models(tmp_path, *args)
    assert "[remote]" not in again.stderr and json.loads(again.stdout)["rows"][0]["cached"]
    assert not any((tmp_path / "remote-jobs").iterdir())  # the remote job folder was cleaned up


def test_entries_of_a_target_that_now_reports_another_machine_are_dropped(tmp_path):
    from edgepipe.choose.measure import MeasurementCache, Target

    jetson = Target("jetson", {"remote": "jetson", "exporters": {}}, bench=None)
    other = Target("pi", {"remote": "pi", "exporters": {}}, bench=None)
    cache = MeasurementCache(tmp_path / "m.json")
    cache.put("a", {"target": jetson.identity, "reported": {"device": "orin", "engines": {}}, "measurement": {}})
    cache.put("b", {"target": other.identity, "reported": {"device": "pi4", "engines": {}}, "measurement": {}})
    cache.save()
    cache = MeasurementCache(tmp_path / "m.json")
    cache.keep_only(jetson, {"device": "orin", "engines": {}})  # the same machine: kept
    assert cache.get("a") is not None
    cache.keep_only(jetson, {"device": "another board", "engines": {}})
    cache.save()
    reread = MeasurementCache(tmp_path / "m.json")
    assert reread.get("a") is None and reread.get("b") is not None  # only that destination's entries went


def test_a_screening_figure_near_the_budget_is_timed_again_and_a_far_one_is_not(tmp_path):
    """The search's short screening timing is taken again, with fuller floors, for an artifact whose figure lies
    near the latency budget (the short figure could put it on the wrong side); one far from it keeps its figure;
    a cached figure near a new budget that was not timed again is measured anew."""
    from edgepipe.api import _measure_target
    from edgepipe.choose.measure import Conditions, Confirm, MeasurementCache, Network, measure

    network = Network.of("lenet5", input_size=32, classes=3)
    screen = Conditions(threads=1, warmup=1, warmup_s=0.0, min_iterations=3, min_duration_s=0.0, memory=False)
    full = Conditions(threads=1, warmup=1, warmup_s=0.0, min_iterations=40, min_duration_s=0.0, memory=False)
    target, cache = _measure_target(None, None, "edgepipe", "edgepipe-bench"), MeasurementCache(tmp_path / "m.json")
    lines: list[str] = []
    (far,) = measure(network, ["tflite-fp32"], screen, target, cache, echo=lines.append)
    assert not far.retimed and far.record.latency_ms["iterations"] < 40
    (again,) = measure(network, ["tflite-fp32"], screen, target, cache, confirm=Confirm(full, "p50", far.p50_ms * 1000))
    assert again.cached and not again.retimed  # far from that budget: the screening figure stands
    # a budget at the cached figure, with a margin no re-measurement on a loaded machine can leave
    near = Confirm(full, "p50", far.p50_ms, margin=10.0)
    lines.clear()
    (timed,) = measure(network, ["tflite-fp32"], screen, target, cache, confirm=near, echo=lines.append)
    assert not timed.cached and timed.retimed  # the cached figure sits on the line: measured and timed again
    assert any("timed again with fuller floors: tflite-fp32" in line for line in lines)
    assert timed.record.latency_ms["iterations"] >= 40 and timed.record.latency_ms["p50"] == timed.p50_ms
    (kept,) = measure(network, ["tflite-fp32"], screen, target, cache, confirm=near)
    assert kept.cached and kept.retimed  # its second look is cached with it


def test_networks_exported_ahead_in_worker_processes_are_timed_from_their_files(tmp_path):
    """Exports converts every network to measure in worker processes side by side before any timing; measure
    then times those files (no export of its own), a network that cannot be built comes back with its reason,
    and the files are gone when the block ends."""
    from edgepipe.api import _measure_target
    from edgepipe.choose.exports import Exports
    from edgepipe.choose.measure import Conditions, MeasurementCache, Network, measure, needs_measuring

    lenet, alexnet = Network.of("lenet5", input_size=32, classes=3), Network.of("alexnet", input_size=32, classes=3)
    conditions = Conditions(threads=1, warmup=1, warmup_s=0.0, min_iterations=3, min_duration_s=0.0, memory=False)
    target, cache = _measure_target(None, None, "edgepipe", "edgepipe-bench"), MeasurementCache(tmp_path / "m.json")
    formats = ["tflite-fp32", "tflite-int8"]
    assert needs_measuring(lenet, formats, conditions, target, cache)
    lines: list[str] = []
    with Exports(formats, conditions, lines.append, parent=tmp_path / "scratch", jobs=2) as exports:
        exports.run([lenet, alexnet])
        assert any("in 2 worker processes" in line for line in lines)
        folder = exports.folder
        made = exports._made[lenet]
        assert [r["status"] for r in made.exported] == ["ok", "ok"] and made.counts["params"] > 0
        assert all((made.folder / r["file"]).is_file() for r in made.exported)
        lines.clear()
        timed = measure(lenet, formats, conditions, target, cache, echo=lines.append, exports=exports)
        assert [m.status.value for m in timed] == ["ok", "ok"] and all(m.p50_ms > 0 for m in timed)
        assert timed[0].params == made.counts["params"]
        assert not made.folder.exists()  # timed, then removed
        assert any("exporting lenet5_classifier" in line for line in lines)  # the worker's lines, shown now
        skipped = measure(alexnet, formats, conditions, target, cache, echo=lines.append, exports=exports)
        assert all("cannot be built: input size 32 is too small" in m.reason for m in skipped)
        assert exports.take(lenet) is None  # taken once
    assert not folder.exists()
    assert not needs_measuring(lenet, formats, conditions, target, cache)  # cached now


def test_drawn_statistics_reach_batch_norms_and_biases_and_nothing_else():
    """A random network for timing gets drawn batch-norm statistics and biases; a layer whose ``bias`` is a
    constant (local response normalization's k) or absent keeps it."""
    import keras
    import numpy as np

    from edgepipe.architectures.layers import LocalResponseNormalization
    from edgepipe.choose.measure import draw_statistics

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(center=False)(x)
    x = LocalResponseNormalization()(x)
    x = keras.layers.Conv2D(4, 1)(x)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.Sequential([keras.Input((8, 8, 3)), keras.Model(inputs, outputs)])(inputs))
    lrn = next(layer for layer in model.layers[-1].layers[0].layers if isinstance(layer, LocalResponseNormalization))
    k = lrn.bias
    assert draw_statistics(model, seed=1) == 3  # the batch norm, the 1x1 convolution, the dense layer
    assert lrn.bias == k
    for variable in model.weights:
        if variable.path.endswith(("bias", "moving_mean")):
            assert np.all(variable.numpy() != 0), variable.path
        if variable.path.endswith(("gamma", "moving_variance")):
            assert np.all(variable.numpy() != 1), variable.path
