"""edgepipe search: the most accurate network, width, input size and format on your data within your budgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import pytest
from click.testing import CliRunner

import edgepipe
from edgepipe.cli import main
from edgepipe.errors import EdgepipeError

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ["mobilenet_v2", "mobilenet_v3_small", "lenet5"]  # mobilenet_v3_small has no width 0.35: a skipped candidate
FORMATS = ["tflite-fp32", "tflite-int8"]
CONFIG = """\
data: {path: "builtin:digits", classes: ["0", "1", "2"], max_per_class: 30}
model: {input_size: 32}
train: {epochs: 15, learning_rate: 0.01}
export: {calibration_size: 16}
bench: {warmup: 2, warmup_s: 0.0, min_iterations: 5, min_duration_s: 0.0, memory: false}
"""
LENETS = [
    "--archs",
    "lenet5",
    "--input-sizes",
    "32,40",
    "--formats",
    "tflite-fp32",
    "--weights",
    "none",
    "--allow-random-weights",
    "--threads",
    "1",
]
CLI_ARGS = [
    "--archs",
    ",".join(ARCHS),
    "--alphas",
    "0.35",
    "--input-sizes",
    "32",
    "--formats",
    ",".join(FORMATS),
    "--weights",
    "none",
    "--allow-random-weights",
    "--threads",
    "1",
]


class Setup:
    def __init__(self, root: Path):
        self.root = root
        self.config = root / "search.yaml"
        self.config.write_text(CONFIG)
        self.cache = root / "cache"  # XDG_CACHE_HOME: the measurement cache every search here shares

    def api(self, output: Path, lines: list | None = None, **budgets):
        out = lines if lines is not None else []
        return edgepipe.search(
            config=self.config,
            archs=ARCHS,
            alphas=[0.35],
            input_sizes=[32],
            formats=FORMATS,
            weights="none",
            allow_random_weights=True,
            threads=1,
            output=output,
            cache=self.cache / "edgepipe" / "measurements.json",
            echo=out.append,
            **budgets,
        )

    def cli(self, output: Path, *extra: str):
        return CliRunner().invoke(
            main,
            ["search", str(self.config), *CLI_ARGS, "--output", str(output), *extra],
            env={"XDG_CACHE_HOME": str(self.cache)},
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return Setup(tmp_path_factory.mktemp("search"))


@pytest.fixture(scope="module")
def searched(setup):
    """A search with no budget: every artifact's figures, and the most accurate one as the winner."""
    lines: list[str] = []
    result = setup.api(setup.root / "out", lines)
    return result, lines


def _row(result, arch, fmt):
    return next(r for r in result.rows if r.arch == arch and r.format == fmt)


def test_the_table_plot_records_and_winner_run(searched, setup):
    from edgepipe.report.plots import is_edgepipe_png

    result, lines = searched
    table = result.table
    for column in ("params M", "MACs M", "size MB", "top-1 %", "95% interval", "p50 ms", "p90 ms", "peak MB", "status"):
        assert column in table
    assert "skipped: alpha 0.35 is not available for 'mobilenet_v3_small'" in table
    measured = [r for r in result.rows if r.format]
    assert len(measured) == 4 and all(r.p50_ms > 0 and r.size_mb > 0 and r.params and r.macs for r in measured)
    best = max((r for r in measured if r.top1 is not None), key=lambda r: r.top1)
    assert result.winner.top1 == best.top1 and result.winner.status == "winner"
    assert all(0 <= r.top1_interval[0] <= r.top1 <= r.top1_interval[1] <= 100 for r in measured if r.top1 is not None)
    # the INT8 artifact of the winner's own network cannot beat it: not exported, with the reason
    assert any(r.status == "cannot win" and "not exported" in r.reason for r in measured)
    assert "[accuracy 1/2]" in "\n".join(lines) and not any("records" in line for line in lines)
    assert is_edgepipe_png(result.plot)
    saved = json.loads(result.record.read_text())
    assert {k.split("/")[0] for k in saved["records"]} == {"latency", "accuracy"}
    assert all(len(r["inputs_sha256"]) == 64 for r in saved["records"].values())
    assert saved["answer"]["winner"]["candidate"] == result.winner.candidate
    # the winner is a normal run directory: verify accepts it, and its top-1 comes from the untouched test split
    verified = CliRunner().invoke(main, ["verify", str(result.winner_run)])
    assert verified.exit_code == 0, verified.output
    results = json.loads((result.winner_run / "results.json").read_text())
    assert results["heldout"]["split"] == "test" and results["heldout"]["took_part_in_choices"] is False
    assert result.winner_measured["split"] == "test" and result.winner_measured["top1"] is not None
    assert "test split" in table and "took part in no choice" in table
    # its train stage found the backbone features the search cached for it, and trained the same head on them
    training = json.loads((result.winner_run / "training.json").read_text())
    assert training["feature_cache"]["note"].startswith("reused ")
    import keras
    import numpy as np

    run_head = keras.saving.load_model(result.winner_run / "model.keras", compile=False).get_layer("classifier")
    with np.load(result.path / "candidates" / result.winner.candidate / "head.npz") as searched_head:
        assert len(searched_head.files) == len(run_head.get_weights()) == 2  # kernel and bias
        for i, run_weights in enumerate(run_head.get_weights()):
            np.testing.assert_allclose(run_weights, searched_head[f"arr_{i}"], atol=1e-6)
    # no memory budget: no peak memory, and the table and search.json say so and why
    assert all(r.peak_memory_mb is None for r in measured)
    assert "peak memory not measured: no --max-memory-mb budget" in table
    assert "peak memory not measured" in saved["answer"]["conditions"]


def test_the_keras_top1_is_what_the_trained_model_scores_on_the_validation_images(searched, setup):
    """The accuracy step scores the head on the validation features it cached; that is the whole model's top-1,
    the model rebuilt from the candidate's saved head (what the export step exports)."""
    import numpy as np

    from edgepipe import config as cfg
    from edgepipe.choose.candidates import Candidate
    from edgepipe.choose.loop import HEAD_FILE, trained_candidate
    from edgepipe.data import make_index, materialize
    from edgepipe.training.controls import predict_arrays

    result, _ = searched
    config = cfg.load(setup.config)
    row = next(r for r in result.rows if r.top1_source == "Keras FP32")
    data = materialize(make_index(config.data, config.seed), row.input_size, 3)
    c = Candidate(row.arch, row.alpha, row.input_size, row.weights)
    assert c.id == row.candidate
    model = trained_candidate(config, data.num_classes, c, result.path / "candidates" / row.candidate / HEAD_FILE)
    val = data.splits["val"]
    predicted = np.argmax(predict_arrays(model, val.images.astype(np.float32)), axis=1)
    assert row.top1 == pytest.approx(100 * np.mean(predicted == val.labels))


def test_an_int8_artifact_that_can_win_is_exported_from_the_trained_head_and_scored_on_validation(setup, tmp_path):
    """With INT8 the only format, the candidate's INT8 artifact can win: the export step exports it from the
    model rebuilt with its trained head (the export stage's recipes) and scores the file on the validation split."""
    import numpy as np

    from edgepipe import config as cfg
    from edgepipe.data import make_index, materialize
    from edgepipe.verification import ArtifactScorer

    result = edgepipe.search(
        config=setup.config,
        archs=["lenet5"],
        input_sizes=[32],
        formats=["tflite-int8"],
        weights="none",
        allow_random_weights=True,
        threads=1,
        output=tmp_path / "out",
        cache=tmp_path / "measurements.json",
        echo=lambda line: None,
    )
    (row,) = result.rows
    assert row.status == "winner" and row.top1_source == "artifact", row
    (artifact,) = (result.path / "candidates" / row.candidate / "artifacts").glob("*.tflite")
    config = cfg.load(setup.config)
    val = materialize(make_index(config.data, config.seed), 32, 3).splits["val"]
    scored = ArtifactScorer(val.images, val.labels, 1)(artifact, "tflite-int8")
    assert row.top1 == pytest.approx(100 * np.mean(np.argmax(scored.probabilities, axis=1) == val.labels))
    # the trained model, not the head as first built: within the INT8 budget of the trained head's FP32 top-1,
    # which the head learned well above chance
    fp32 = json.loads(result.record.read_text())["records"][f"accuracy/{row.candidate}"]["top1"]
    assert fp32 > 100 / 3 + 20 and abs(row.top1 - fp32) <= 100 / len(val) + 1e-9
    # the winner's run trained the same model, so its export stage took that very file from its artifact cache
    # (seeded by the search) instead of converting again, and verified it against its own model
    (record,) = json.loads((result.winner_run / "artifacts" / "artifacts.json").read_text())["artifacts"]
    assert record["details"]["from_artifact_cache"] and record["verification"]["passed"]
    assert (result.winner_run / "artifacts" / record["file"]).read_bytes() == artifact.read_bytes()
    assert record["file"] == "lenet5-tflite-int8.tflite" and record["status"] == "ok"


def test_budgets_exclude_by_latency_and_size_and_the_cli_gives_the_same_answer(searched, setup):
    result, _ = searched
    rows = [r for r in result.rows if r.format]
    largest = max(rows, key=lambda r: r.size_mb)
    size_budget = (largest.size_mb + max(r.size_mb for r in rows if r is not largest)) / 2
    rest = sorted((r for r in rows if r is not largest), key=lambda r: r.latency_ms)
    slowest = rest[-1]
    if rest[-1].latency_ms == rest[-2].latency_ms:
        pytest.skip("two artifacts measured exactly the same latency; no budget separates them")
    latency_budget = (rest[-1].latency_ms + rest[-2].latency_ms) / 2
    lines: list[str] = []
    budgeted = setup.api(setup.root / "out", lines, max_latency_ms=latency_budget, max_size_mb=size_budget)
    by_label = {r.label: r for r in budgeted.rows}
    assert by_label[largest.label].status == "over budget" and "size" in by_label[largest.label].reason
    assert by_label[slowest.label].status == "over budget" and "latency p50" in by_label[slowest.label].reason
    winner = budgeted.winner
    assert winner.label not in (largest.label, slowest.label)
    assert winner.latency_ms <= latency_budget and winner.size_mb <= size_budget
    within = [r for r in budgeted.rows if r.status in ("within budgets", "winner")]
    assert winner.top1 == max(r.top1 for r in within)
    # latency and accuracy came from the first search's records: nothing measured or trained again
    assert sum(line.strip() == "from this search's records" for line in lines) >= 2
    assert not any("edgepipe-measure-" in line or "validation top-1 (Keras FP32)" in line for line in lines)
    cli = setup.cli(
        setup.root / "out", "--max-latency-ms", repr(latency_budget), "--max-size-mb", repr(size_budget), "--json"
    )
    assert cli.exit_code == 0, cli.output
    answer = json.loads(cli.stdout)
    assert answer["winner"]["candidate"] == winner.candidate
    assert answer["winner"]["format"] == winner.format and answer["winner"]["top1"] == winner.top1
    assert [r["status"] for r in answer["rows"]] == [r.status for r in budgeted.rows]
    assert "training with strategy" not in cli.stderr and "exporting" not in cli.stderr  # same inputs: all reused


def test_no_candidate_left_is_one_line_naming_the_closest(searched, setup):
    result, _ = searched
    fastest = min((r for r in result.rows if r.format), key=lambda r: r.latency_ms)
    cli = setup.cli(setup.root / "out", "--max-latency-ms", "0.000001")
    assert cli.exit_code == 2, cli.output
    error = [line for line in cli.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "no candidate meets the budgets" in error[0] and fastest.label in error[0]
    best = max((r for r in result.rows if r.top1 is not None), key=lambda r: r.top1)
    with pytest.raises(EdgepipeError, match=f"the closest is {best.label} at {best.top1:.1f}%"):
        setup.api(setup.root / "out", min_top1=min(best.top1 + 0.01, 100))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-latency-ms", "-1"], "--max-latency-ms must be above 0"),
        (["--max-size-mb", "nan"], "--max-size-mb must be a finite number"),
        (["--max-memory-mb", "0"], "--max-memory-mb must be above 0"),
        (["--min-top1", "101"], "--min-top1 is a percentage"),
        (["--weights", "a.h5"], "one weights file (a.h5) for 3 architectures"),
    ],
)
def test_bad_budgets_are_one_line_errors_with_exit_2(setup, tmp_path, flags, message):
    result = setup.cli(tmp_path / "never", *flags)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith("error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "never").exists()


def test_a_killed_search_resumes_where_it_stopped(searched, setup, tmp_path):
    """Killed once its first candidate's accuracy record is written, the rerun reuses that record as it is (two
    LeNet-5 candidates: the cheapest networks, so the kill comes early and the rerun is short)."""
    output = tmp_path / "resumed"
    record = output / "search.json"
    env = {**os.environ, "XDG_CACHE_HOME": str(setup.cache), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "edgepipe", "search", str(setup.config), *LENETS, "--output", str(output)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = None
    try:
        deadline = time.monotonic() + 300
        while first is None and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                records = json.loads(record.read_text())["records"]
            except (OSError, ValueError, KeyError):
                continue
            first = next(({"key": k, **v} for k, v in records.items() if k.startswith("accuracy/")), None)
    finally:
        process.kill()
        process.wait()
    assert first is not None, "the search ended or stalled before writing an accuracy record"
    assert json.loads(record.read_text())["answer"] is None  # it really was stopped before its answer
    lines: list[str] = []
    resumed = edgepipe.search(
        config=setup.config,
        archs="lenet5",
        input_sizes=[32, 40],
        formats="tflite-fp32",
        weights="none",
        allow_random_weights=True,
        threads=1,
        output=output,
        cache=setup.cache / "edgepipe" / "measurements.json",
        echo=lines.append,
    )
    again = json.loads(record.read_text())["records"][first["key"]]
    assert again["finished"] == first["finished"] and again["inputs_sha256"] == first["inputs_sha256"]
    assert any("from this search's records: validation top-1" in line for line in lines)
    assert resumed.winner is not None and (output / "winner" / "results.json").is_file()


def test_thirty_points_get_numbers_that_never_overlap(tmp_path):
    import numpy as np

    from edgepipe.choose.answer import OVER_BUDGET, WINNER, WITHIN, Row
    from edgepipe.choose.budgets import Budgets
    from edgepipe.choose.plot import search_plot
    from edgepipe.report.plots import is_edgepipe_png

    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):  # close together, as a real search's artifacts are: 0.8 pp and 30% of latency apart
        top1 = 94.7 + rng.random() * 0.8
        rows.append(
            Row(
                f"c{i}",
                "mobilenet_v2",
                0.35,
                224,
                "imagenet",
                "tflite-int8",
                OVER_BUDGET if i % 5 == 0 else WITHIN,
                latency_ms=1 + rng.random() * 0.3,
                top1=top1,
                top1_interval=[top1 - 3, min(top1 + 3, 100.0)],
                number=i + 1,
            )
        )
    rows[3].status = WINNER
    boxes = search_plot(rows, Budgets(max_latency_ms=1.2, min_top1=94), tmp_path / "plot.png", "thirty artifacts")
    assert len(boxes) == 30 and is_edgepipe_png(tmp_path / "plot.png")
    overlapping = [
        (a, b) for a, b in combinations(boxes, 2) if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
    ]
    assert not overlapping


def test_imagenet_weights_missing_here_skip_the_candidate_unless_random_weights_are_allowed(tmp_path, monkeypatch):
    import keras.src.backend.config as keras_config

    from edgepipe.choose.candidates import enumerate_candidates

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))  # an empty Keras cache: nothing to load
    (skipped,) = enumerate_candidates(["mobilenet_v2"], [0.35], [32], "imagenet", 3, False, lambda line: None)
    assert "not on this machine" in skipped.reason and "nothing is downloaded" in skipped.reason
    assert not (tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5").exists()
    (random,) = enumerate_candidates(["mobilenet_v2"], [0.35], [32], "imagenet", 3, True, lambda line: None)
    assert random.reason is None and random.weights == "none" and "random in place of ImageNet" in random.weights_note
    from tests.conftest import SHARED_WEIGHTS

    file = SHARED_WEIGHTS / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    if not file.is_file():
        pytest.skip("the shared ImageNet weights are not on this machine")
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / file.name).symlink_to(file)
    (found,) = enumerate_candidates(["mobilenet_v2"], [0.35], [32], "imagenet", 3, False, lambda line: None)
    assert found.reason is None and found.weights == "imagenet"


SEARCH_SECTION = """\
search:
  archs: [LeNet5]
  input_sizes: [32]
  formats: [tflite-fp32]
  weights: {lenet5: none}
  allow_random_weights: true
  max_latency_ms: 1000
  threads: 1
"""


def test_the_config_search_section_alone_runs_a_search_and_a_flag_overrides_it(setup, tmp_path):
    config = tmp_path / "search.yaml"
    config.write_text(CONFIG + SEARCH_SECTION + f"  output: {tmp_path / 'from-config'}\n")
    env = {"XDG_CACHE_HOME": str(setup.cache)}
    alone = CliRunner().invoke(main, ["search", str(config), "--json"], env=env)
    assert alone.exit_code == 0, alone.output
    answer = json.loads(alone.stdout)
    assert answer["path"] == str(tmp_path / "from-config")  # search.output
    assert {(r["candidate"], r["format"]) for r in answer["rows"]} == {("lenet5-32px-none", "tflite-fp32")}
    assert answer["budgets"]["max_latency_ms"] == 1000 and answer["budgets"]["percentile"] == "p50"
    flags = ["--input-sizes", "40", "--percentile", "p90", "--output", str(tmp_path / "flags"), "--json"]
    overridden = CliRunner().invoke(main, ["search", str(config), *flags], env=env)
    assert overridden.exit_code == 0, overridden.output
    answer = json.loads(overridden.stdout)
    assert answer["path"] == str(tmp_path / "flags")
    assert [r["candidate"] for r in answer["rows"]] == ["lenet5-40px-none"]  # the flag, not the config's 32
    assert answer["budgets"]["max_latency_ms"] == 1000 and answer["budgets"]["percentile"] == "p90"
    # the API reads the same section, and its keyword arguments override it as the flags do
    api = edgepipe.search(config=config, input_sizes=40, percentile="p90", output=tmp_path / "flags", echo=[].append)
    assert [r.candidate for r in api.rows] == ["lenet5-40px-none"] and api.winner.format == "tflite-fp32"


def test_search_options_layer_flags_over_the_api_over_the_config():
    from edgepipe import config as cfg
    from edgepipe.choose.options import SearchOptions

    section = cfg.from_dict({"search": {"input_sizes": [32], "max_size_mb": 4, "percentile": "p90"}}).search
    base = SearchOptions.from_config(section)
    chosen = SearchOptions(percentile="p99").over(SearchOptions(input_sizes=[40], threads=2).over(base))
    assert (chosen.input_sizes, chosen.threads, chosen.percentile, chosen.max_size_mb) == ([40], 2, "p99", 4.0)
    assert chosen.weights == "imagenet" and chosen.remote_edgepipe == "edgepipe"  # the section's defaults
    with pytest.raises(TypeError):
        SearchOptions([32])  # keyword-only
    with pytest.raises(EdgepipeError, match="--max-size-mb must be above 0"):
        SearchOptions(max_size_mb=-1).over(base).budgets()


@pytest.mark.parametrize(
    "section, message",
    [
        ("search: {max_latency_ms: -1}", "config key 'search.max_latency_ms' must be above 0"),
        ("search: {max_size_mb: .nan}", "config key 'search.max_size_mb' must be a finite number"),
        ("search: {weights: {mobilenet_v9: w.h5}}", "config key 'search.weights': unknown architecture"),
        ("search: {percentile: p70}", "config key 'search.percentile' must be one of p50"),
        ("search: {archs: [lenet6]}", "config key 'search.archs': unknown architecture 'lenet6'"),
    ],
)
def test_a_bad_search_section_is_a_one_line_error(tmp_path, section, message):
    config = tmp_path / "bad.yaml"
    config.write_text(section + "\n")
    result = CliRunner().invoke(main, ["search", str(config), "--output", str(tmp_path / "never")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert not (tmp_path / "never").exists()


def test_memory_is_measured_only_with_a_memory_budget_or_when_asked():
    """A fresh process per artifact for a figure no budget reads is left out, whatever the run's bench.memory."""
    from edgepipe.api import _screening
    from edgepipe.choose.options import SearchOptions
    from edgepipe.config import BENCH_DEFAULTS

    assert BENCH_DEFAULTS.memory  # runs measure it by default; a search does not
    assert not _screening(BENCH_DEFAULTS, SearchOptions(), SearchOptions().budgets())[0].memory
    assert _screening(BENCH_DEFAULTS, SearchOptions(memory=True), SearchOptions().budgets())[0].memory
    budgeted = SearchOptions(max_memory_mb=100)
    assert _screening(BENCH_DEFAULTS, budgeted, budgeted.budgets())[0].memory
    # the screening's floors, with the bench section's for a second look near a latency budget
    timed = SearchOptions(max_latency_ms=2)
    conditions, confirm = _screening(BENCH_DEFAULTS, timed, timed.budgets())
    assert conditions.min_iterations < BENCH_DEFAULTS.min_iterations and confirm.limit_ms == 2
    assert confirm.conditions.min_iterations == BENCH_DEFAULTS.min_iterations
    assert conditions.warmup_s < BENCH_DEFAULTS.warmup_s == confirm.conditions.warmup_s
    assert _screening(BENCH_DEFAULTS, SearchOptions(), SearchOptions().budgets())[1] is None  # no budget, no line


def test_the_winners_run_measures_memory_when_the_search_did():
    from edgepipe import config as cfg
    from edgepipe.choose.candidates import Candidate
    from edgepipe.choose.loop import winner_config

    config = cfg.from_dict({"data": {"path": "builtin:synthetic"}}, {})
    c = Candidate("lenet5", None, 32, "none")
    assert config.bench.memory  # a run's default
    assert not winner_config(config, c, "tflite-fp32", 1, Path("w"), memory=False).bench.memory
    assert winner_config(config, c, "tflite-fp32", 1, Path("w"), memory=True).bench.memory
    quiet = cfg.from_dict({"data": {"path": "builtin:synthetic"}, "bench": {"memory": False}}, {})
    assert not winner_config(quiet, c, "tflite-fp32", 1, Path("w"), memory=True).bench.memory


def test_a_head_on_features_of_random_weights_is_flagged_at_chance():
    import numpy as np

    from edgepipe.choose.answer import WITHIN, Row, _cells
    from edgepipe.choose.loop import degenerate_features

    # pooled features of an untrained MobileNet come out at 1e-10..1e-20: a head learns only its bias from them
    note = degenerate_features(np.full((6, 8), 3e-12, np.float32))
    assert note and note.startswith("head at chance") and "3e-12" in note
    assert degenerate_features(np.random.default_rng(0).random((6, 8), np.float32)) is None
    row = Row("c", "mobilenet_v2", 0.35, 96, "none", "tflite-fp32", WITHIN, top1=25.0, extra={"note": note})
    assert _cells(row)[-1] == f"within budgets ({note})"


def test_the_network_built_for_timing_is_trained_as_a_network_built_anew(setup, tmp_path):
    """The latency step builds each candidate's network as its accuracy step would, converts it and keeps it (in the
    worker that converted it); the accuracy step then trains that very model instead of building it again. The
    head it trains is, to the bit, the head trained on a network built anew."""
    import numpy as np

    from edgepipe import config as cfg
    from edgepipe.choose import kept
    from edgepipe.choose.candidates import Candidate
    from edgepipe.choose.loop import HEAD_FILE, train_candidate
    from edgepipe.choose.measure import Conditions, Network, prepare
    from edgepipe.data import make_index, materialize

    config = cfg.load(setup.config)
    data = materialize(make_index(config.data, config.seed), 32, 3)
    c = Candidate("mobilenet_v2", 0.35, 32, "none")
    spec = {"config": config.to_dict(), "candidate": c, "classes": data.num_classes}
    conditions = Conditions(threads=1, calibration_images=4, memory=False, weights="candidate")
    network = Network("mobilenet_v2", 0.35, 32, 3, data.num_classes)
    builder = ("edgepipe.choose.loop:built_for_timing", spec)
    try:
        made = prepare(network, ["tflite-int8"], conditions, tmp_path / "timing", lambda line: None, builder)
        assert [r["status"] for r in made.exported] == ["ok"] and made.counts["params"] > 0
        assert len(kept._KEPT) == 1  # the converted network, kept for the accuracy step
        heads, payloads = [], []
        for name in ("kept", "anew"):
            head = tmp_path / name / "candidates" / c.id / HEAD_FILE
            payloads.append(train_candidate(config, data, c, head, tmp_path / name / "cache", lambda line: None))
            assert payloads[-1]["top1"] > 0 and not kept._KEPT  # the first took the kept network, the second built
            with np.load(head) as saved:
                heads.append([saved[k] for k in sorted(saved.files)])
    finally:
        kept.clear()
    for kept_weights, anew_weights in zip(*heads):
        np.testing.assert_array_equal(kept_weights, anew_weights)
    # the whole trained model (which the export step checks) and the cached features' names (which the winner's
    # run links) are the same too
    for field in ("weights_sha256", "features", "top1", "head_sha256"):
        assert payloads[0][field] == payloads[1][field], field
    # a builder goes with conditions of a candidate's weights only: their figures are cached under them
    with pytest.raises(ValueError):
        prepare(network, ["tflite-int8"], Conditions(threads=1), tmp_path / "random", lambda line: None, builder)


def test_a_measurement_key_names_the_weights_its_files_held():
    """A search times each candidate's own network, so its cached figures carry the weights' identity; a network of
    random weights (models --measure) is keyed as one with drawn statistics, so figures measured before those
    (keyed without weights: OpenVINO INT8 files of zero biases, timed too fast) are not taken."""
    import dataclasses

    from edgepipe.choose.measure import Conditions, Network, Target, cache_key
    from edgepipe.fileio import sha256_value

    target = Target("cpu", {"device": "here"}, bench=None)
    random, imagenet = Network("mobilenet_v2", 0.35, 96, 3, 4), Network("mobilenet_v2", 0.35, 96, 3, 4, "imagenet")
    plain = Conditions(threads=2)
    old = {"arch": "mobilenet_v2", "alpha": 0.35, "input_size": 96, "channels": 3, "classes": 4}
    before = {k: v for k, v in dataclasses.asdict(plain).items() if k not in ("memory", "weights")}
    stale = sha256_value({"target": target.identity, "network": old, "format": "tflite-fp32", "conditions": before})
    assert cache_key(target, random, "tflite-fp32", plain) == sha256_value(
        {"target": target.identity, "network": old, "format": "tflite-fp32", "conditions": plain.key()}
    )
    assert cache_key(target, random, "tflite-fp32", plain) != stale and plain.key()["weights"] != "random"
    searched = Conditions(threads=2, weights="candidate")
    keys = {
        cache_key(target, n, "tflite-fp32", searched) for n in (random, imagenet, Network(*old.values(), "none@seed0"))
    }
    assert len(keys) == 3 and searched.key()["weights"] == "candidate"
