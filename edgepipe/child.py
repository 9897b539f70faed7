"""Run one function in a fresh Python process: ``python -m edgepipe.child REQUEST ANSWER``.

A fresh process (not a fork: TensorFlow's threads do not survive one) returns all its memory when it ends,
and holds only what the function imports: the export converts a large model one format per child, and
memory figures are measured in a process that loaded nothing but the engine. The argument and the result
travel as files in a temporary folder, as JSON or (for objects JSON cannot hold) pickle; an exception in
the child comes back as one line.
"""

from __future__ import annotations

import importlib
import json
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgepipe.errors import EdgepipeError


class ChildFailed(EdgepipeError):
    """The child gave no result. ``kind``: raised (its function raised; ``line`` is "Type: first line"),
    ended (it died; ``line`` is the last line it wrote to stderr, when captured), or timeout."""

    def __init__(self, kind: str, line: str, exit_code: int | None = None):
        super().__init__(line)
        self.kind, self.line, self.exit_code = kind, line, exit_code


def run(
    function: str,
    argument: Any,
    *,
    pickled: bool = False,
    echo: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
    folder: Path | None = None,
    env: dict[str, str] | None = None,
) -> Any:
    """``function(argument)`` ("package.module:name") in a fresh process; its result, or ChildFailed.

    ``pickled``: argument and result travel pickled, else as JSON. ``echo``: the child's output (stdout and
    stderr) is relayed line by line as it comes, else captured (no timeout with ``echo``). ``folder``: where
    the exchange files go (default: the system's temporary folder). ``env``: variables set in the child
    where the environment does not already set them.
    """
    codec = "pickle" if pickled else "json"
    with tempfile.TemporaryDirectory(prefix="edgepipe-child-", dir=folder) as work:
        command, answer, child_env = _request(Path(work), codec, function, argument, env)
        if echo is not None:
            code, said = _relayed(command, echo, child_env), ""
        else:
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=timeout_s, check=False, env=child_env
                )
            except subprocess.TimeoutExpired:
                raise ChildFailed("timeout", f"did not finish within {timeout_s:.0f} s") from None
            code = done.returncode
            said = ([line for line in done.stderr.strip().splitlines() if line.strip()] or [""])[-1]
        return _answer(answer, codec, code, said)


def _request(
    work: Path, codec: str, function: str, argument: Any, env: dict[str, str] | None
) -> tuple[list[str], Path, dict[str, str]]:
    """The request written in ``work``: (the command that runs it, where its answer will be, the child's
    environment: ``env`` where the environment does not set it, and this process as its parent)."""
    import os

    request, answer = work / f"request.{codec}", work / f"answer.{codec}"
    _write(request, codec, {"function": function, "argument": argument})
    command = [sys.executable, "-m", "edgepipe.child", str(request), str(answer)]
    return command, answer, {**(env or {}), **os.environ, PARENT: str(os.getpid())}


def _answer(answer: Path, codec: str, code: int | None, said: str = "") -> Any:
    """The child's result from its answer file, or ChildFailed (no answer: it ended; an error: it raised)."""
    if not answer.exists():
        raise ChildFailed("ended", said or f"exit code {code}", code)
    outcome = _read(answer, codec)
    if outcome["kind"] == "error":
        raise ChildFailed("raised", outcome["value"], code)
    return outcome["value"]


def _popen(command: list[str], env: dict[str, str], stdin: int | None = None) -> subprocess.Popen:
    """The child started, its stdout and stderr on one pipe (and its stdin on one when ``stdin`` is
    subprocess.PIPE)."""
    return subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _relayed(command: list[str], echo: Callable[[str], None], env: dict[str, str]) -> int:
    process = _popen(command, env)
    try:
        for line in process.stdout:
            echo(line.rstrip("\n"))
        return process.wait()
    except BaseException:  # interrupted or terminated: the child must not go on writing
        process.kill()
        process.wait()
        raise


def _write(path: Path, codec: str, value: Any) -> None:
    if codec == "pickle":
        path.write_bytes(pickle.dumps(value))
    else:
        path.write_text(json.dumps(value), encoding="utf-8")


def _read(path: Path, codec: str) -> Any:
    return pickle.loads(path.read_bytes()) if codec == "pickle" else json.loads(path.read_text(encoding="utf-8"))


#: the environment variable that names the process a child was started by (see _end_with_parent)
PARENT = "EDGEPIPE_PARENT_PID"


def start(
    function: str, argument: Any, folder: Path, env: dict[str, str] | None = None, stdin: int | None = None
) -> subprocess.Popen:
    """``function(argument)`` started in a fresh process, its output (stdout and stderr) on a pipe; the caller
    reads the pipe, waits, and kills the process when it gives up on it (what the function returns is not read:
    it reports through its output). ``folder`` holds the exchange files until the caller removes it. ``stdin``:
    subprocess.PIPE to write to the child."""
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edgepipe-child-", dir=folder))
    command, _, child_env = _request(work, "pickle", function, argument, env)
    return _popen(command, child_env, stdin)


def _end_with_parent() -> None:
    """Linux: have this child killed when the process that started it ends (a search or export killed mid-way
    leaves no converter running beside what comes next); it ends now if that process is already gone."""
    import ctypes
    import os
    import signal

    parent = os.environ.get(PARENT)
    if not parent:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a killed command's children finish their work, then end
        return
    if str(os.getppid()) != parent:
        os._exit(1)


def _main(request: Path, answer: Path) -> None:
    _end_with_parent()
    codec = request.suffix.lstrip(".")
    task = _read(request, codec)
    module, _, name = task["function"].partition(":")
    try:
        outcome = {"kind": "result", "value": getattr(importlib.import_module(module), name)(task["argument"])}
    except BaseException as exc:  # reported to the parent, which decides; the child only ends
        outcome = {
            "kind": "error",
            "value": f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}",
        }
    _write(answer, codec, outcome)


if __name__ == "__main__":
    _main(Path(sys.argv[1]), Path(sys.argv[2]))
