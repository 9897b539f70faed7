"""Benchmark on another machine over SSH: copy artifacts and a data sample, run ``edgepipe bench``
there, bring the results back.

Uses the system's OpenSSH client, so keys, known hosts, ports and jump hosts come from
the user's SSH configuration (``~/.ssh/config``, or ``--ssh-config FILE``). It runs in
batch mode: it never asks for a password, and no password is ever read from a config.
The remote machine needs edgepipe installed (e.g. the Jetson image, or a venv).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgepipe.errors import EdgepipeError


def _ssh_base(ssh_config: Path | None) -> list[str]:
    if shutil.which("ssh") is None:
        raise EdgepipeError(
            "the OpenSSH client 'ssh' is not installed", "Install openssh-client (apt-get install openssh-client)."
        )
    command = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
    if ssh_config is not None:
        command += ["-F", str(ssh_config)]
    return command


def _run(
    command: list[str],
    what: str,
    host: str,
    stdin=None,
    echo: Callable[[str], None] | None = None,
    timeout: float = 3600,
) -> str:
    """Run an ssh command; raise a one-line EdgepipeError naming ``what`` failed and ssh's own words."""
    try:
        proc = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if echo:
                echo("  [remote] " + line.rstrip("\n"))
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise EdgepipeError(f"{what} on {host} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        said = [line for line in stderr.strip().splitlines() if line.strip()]
        detail = said[-1][:240] if said else f"exit code {proc.returncode}"
        hint = (
            "Check that 'ssh " + host + "' logs in without a password (keys in your SSH configuration)."
            if proc.returncode == 255
            else "Check that edgepipe is installed there (--remote-edgepipe PATH)."
        )
        raise EdgepipeError(f"{what} on {host} failed: {detail}", hint)
    return "".join(lines)


def sample_data(data_dir: Path, per_class: int, into: Path, seed: int = 0) -> dict[str, int]:
    """Copy up to ``per_class`` images of each class folder (seeded choice) into ``into``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    counts = {}
    for class_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        chosen = [files[i] for i in sorted(rng.permutation(len(files))[:per_class])]
        (into / class_dir.name).mkdir(parents=True, exist_ok=True)
        for f in chosen:
            shutil.copy2(f, into / class_dir.name / f.name)
        counts[class_dir.name] = len(chosen)
    if not counts:
        raise EdgepipeError(
            f"data folder '{data_dir}' has no class subfolders", "Pass an image folder with one subfolder per class."
        )
    return counts


def check_destination(host: str) -> None:
    """Refuse a destination ssh would read as an option (``-oProxyCommand=...``) or that is empty."""
    if not host or host.startswith("-") or any(c.isspace() for c in host):
        raise EdgepipeError(
            f"'{host}' is not an SSH destination",
            "Pass [USER@]HOST (a name from your SSH config, or an address); it may not start with '-'.",
        )


def to_arguments(request) -> list[str]:
    """The ``edgepipe bench`` options that repeat ``request`` (an edgepipe.api.BenchRequest) on another machine."""
    args = [
        "--threads",
        ",".join(map(str, request.threads)),
        "--batch",
        ",".join(map(str, request.batches)),
        "--warmup",
        str(request.warmup),
        "--warmup-time",
        str(request.warmup_s),
        "--min-iterations",
        str(request.min_iterations),
        "--min-duration",
        str(request.min_duration_s),
        "--seed",
        str(request.seed),
        "--device",
        ",".join(request.devices),
    ]
    if request.engines:
        args += ["--engine", ",".join(request.engines)]
    if not request.memory:
        args.append("--no-memory")
    if request.tune:
        args.append("--tune")
    return args


def bench_remote(
    host: str,
    request,
    *,
    echo: Callable[[str], None],
    per_class: int = 20,
    remote_edgepipe: str = "edgepipe",
    remote_dir: str = "edgepipe-bench",
    ssh_config: Path | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Run ``edgepipe bench`` for ``request`` on ``host`` over SSH; returns its results (with where they were
    measured) as the JSON mapping the remote side wrote."""
    from edgepipe.backends import container_of

    check_destination(host)
    ssh = _ssh_base(ssh_config)
    job = f"{remote_dir.rstrip('/')}/{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="edgepipe-remote-") as tmp:
        staging = Path(tmp)
        names = []
        for path in request.paths:
            for item in (path, *container_of(path).companions(path)):
                if item.exists():
                    shutil.copy2(item, staging / item.name)
            names.append(path.name)
        remote_args = [remote_edgepipe, "bench", *names, *to_arguments(request), "--output", "results.json"]
        if request.data is not None:
            counts = sample_data(Path(request.data), per_class, staging / "data")
            echo(f"data sample: {sum(counts.values())} images ({per_class} at most per class) from {request.data}")
            remote_args += ["--data", "data"]
        if request.labels is not None:
            shutil.copy2(request.labels, staging / "labels.txt")
            remote_args += ["--labels", "labels.txt"]
        echo(f"copying {len(names)} artifact(s) to {host}:{job}")
        tar = subprocess.Popen(["tar", "-C", str(staging), "-cf", "-", "."], stdout=subprocess.PIPE)
        unpack = f"mkdir -p {shlex.quote(job)} && tar -C {shlex.quote(job)} -xf -"
        _run([*ssh, "--", host, unpack], "copying the artifacts", host, stdin=tar.stdout)
        tar.wait()
    try:
        echo(f"running on {host}: {' '.join(remote_args)}")
        _run(
            [*ssh, "--", host, f"cd {shlex.quote(job)} && {shlex.join(remote_args)}"], "edgepipe bench", host, echo=echo
        )
        text = _run([*ssh, "--", host, f"cat {shlex.quote(job)}/results.json"], "fetching the results", host)
    finally:
        if not keep:
            subprocess.run(
                [*ssh, "--", host, f"rm -rf {shlex.quote(job)}"], capture_output=True, check=False, timeout=120
            )
    try:
        results = json.loads(text)
    except ValueError:
        raise EdgepipeError(
            f"the results fetched from {host} are not JSON", "Run edgepipe bench there by hand to see why."
        ) from None
    if not isinstance(results, dict):
        raise EdgepipeError(
            f"the results fetched from {host} are not edgepipe results", "Run edgepipe bench there by hand."
        )
    results["remote"] = {"host": host, "directory": job if keep else None, "edgepipe": remote_edgepipe}
    return results
