"""edgepipe.choose.workers: items spread over worker processes, each item's result or why there is none."""

import os
from pathlib import Path

import pytest

from edgepipe.choose.workers import WorkerFailed, Workers, in_workers


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    """The workers import this module by name, from wherever the tests run."""
    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))


def square(item):
    """A worker's function: (result, summary line); a negative item raises, "die" ends the worker."""
    if item == "die":
        print("about to end", flush=True)
        os._exit(3)
    if item < 0:
        raise ValueError(f"{item} is negative")
    return item * item, f"squared {item}"


def test_each_item_gets_its_result_or_the_reason_it_has_none(tmp_path):
    lines: list[str] = []
    out = in_workers(f"{__name__}:square", [1, -2, 3, 4], jobs=2, folder=tmp_path / "w", echo=lines.append)
    assert out[0] == 1 and out[2] == 9 and out[3] == 16
    assert isinstance(out[1], WorkerFailed) and "ValueError: -2 is negative" in out[1].why  # the others went on
    assert sorted(line.split(": ", 1)[0] for line in lines) == [f"  done {k}/4" for k in range(1, 5)]
    assert any("failed: ValueError" in line for line in lines)


def test_a_worker_that_dies_leaves_its_items_failed_with_its_last_words(tmp_path):
    out = in_workers(f"{__name__}:square", [2, "die"], jobs=2, folder=tmp_path / "w", echo=lambda line: None)
    assert out[0] == 4
    assert isinstance(out[1], WorkerFailed) and "exit code 3" in out[1].why and "about to end" in out[1].why


def pid(item):
    """A worker's function: the process it ran in."""
    return os.getpid(), f"ran {item}"


def test_a_pool_keeps_its_workers_from_one_map_to_the_next(tmp_path):
    with Workers(2, tmp_path / "w") as workers:
        first = workers.map(f"{__name__}:pid", [1, 2, 3, 4], lambda line: None)
        second = workers.map(f"{__name__}:pid", [5, 6], lambda line: None)
        pids = {p.process.pid for p in workers._workers}
    assert set(first) == pids and set(second) == pids  # each map started with one item in each worker
    assert all(not p.alive for p in workers._workers)  # closed at the end of the block


def test_a_worker_that_died_between_maps_gets_no_items_and_the_pool_waits_for_imports(tmp_path):
    with Workers(2, tmp_path / "w", preload=("json",)) as workers:
        workers.wait_ready()
        assert all(w.ready.is_set() for w in workers._workers)
        assert workers.live == 2
        dead = workers._workers[0]
        dead.process.kill()
        dead.process.wait()
        assert workers.live == 1  # what a progress line counts
        out = workers.map(f"{__name__}:pid", [1, 2, 3], lambda line: None)
    assert set(out) == {workers._workers[1].process.pid}


def test_the_items_of_a_worker_that_died_go_to_the_workers_left(tmp_path):
    with Workers(2, tmp_path / "w") as workers:
        out = workers.map(f"{__name__}:square", ["die", 1, 2, 3, 4, 5], lambda line: None, cost=lambda item: 1)
    assert isinstance(out[0], WorkerFailed) and "about to end" in out[0].why
    assert out[1:] == [1, 4, 9, 16, 25]


def test_an_item_goes_to_the_worker_it_prefers_when_that_one_is_free(tmp_path):
    """The search runs a candidate's accuracy step in the worker that built (and keeps) its network."""
    with Workers(2, tmp_path / "w") as workers:
        first, second = (w.process.pid for w in workers._workers)
        items = [("b", second), ("a", first)]  # in handing-out order, the first worker would take "b"
        out = workers.map(f"{__name__}:pid", items, lambda line: None, prefer=lambda item: item[1])
        # an item preferring no worker of the pool (one that has ended, say) goes to any
        loose = workers.map(f"{__name__}:pid", [("c", 1)], lambda line: None, prefer=lambda item: item[1])
    assert out == [second, first]
    assert loose[0] in (first, second)


def test_each_runs_a_function_once_in_every_worker(tmp_path):
    with Workers(3, tmp_path / "w") as workers:
        ran = workers.each(f"{__name__}:pid")
        assert sorted(ran) == sorted(w.process.pid for w in workers._workers)
