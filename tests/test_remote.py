"""edgepipe bench --remote against a real sshd started on 127.0.0.1 for the test."""

import getpass
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgepipe.cli import main
from edgepipe.fileio import read_json

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
pytestmark = pytest.mark.skipif(
    SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
    reason="OpenSSH server and client are needed (apt-get install openssh-server openssh-client)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ssh_host(tmp_path_factory):
    """An sshd on 127.0.0.1 accepting one generated key, and an SSH config naming it 'edgepipe-test'."""
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port = _free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / "host_key"}
AuthorizedKeysFile {d / "authorized_keys"}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile {d / "sshd.pid"}
""")
    host_key = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (d / "ssh_config").write_text(f"""Host edgepipe-test
    HostName 127.0.0.1
    Port {port}
    User {getpass.getuser()}
    IdentityFile {d / "client_key"}
    IdentitiesOnly yes
    UserKnownHostsFile {d / "known_hosts"}
    StrictHostKeyChecking yes
""")
    try:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory (as root)
    except PermissionError:
        pass  # an unprivileged sshd serves only its own user and needs no such directory
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE, text=True)
    for _ in range(100):
        probe = subprocess.run(
            ["ssh", "-F", str(d / "ssh_config"), "-o", "BatchMode=yes", "edgepipe-test", "true"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0:
            break
        if server.poll() is not None:
            pytest.fail("sshd exited: " + server.stderr.read())
        time.sleep(0.1)
    else:
        server.kill()
        pytest.fail("sshd did not accept the test key: " + probe.stderr.decode())
    yield d / "ssh_config"
    server.terminate()
    server.wait(timeout=10)


def test_bench_runs_remotely_over_ssh_and_brings_results_back(tiny_run, ssh_host, tmp_path):
    from tests.conftest import make_image_folder

    data = make_image_folder(tmp_path / "digits-like", classes=("0", "1", "2"), per_class=4, size=32)
    artifact = next(tiny_run.artifacts_dir.glob("*-onnx-fp32.onnx"))
    remote_edgepipe = str(Path(sys.executable).with_name("edgepipe"))
    out = tmp_path / "remote.json"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            str(artifact),
            "--data",
            str(data),
            "--labels",
            str(tiny_run.labels),
            "--remote",
            "edgepipe-test",
            "--ssh-config",
            str(ssh_host),
            "--remote-edgepipe",
            remote_edgepipe,
            "--remote-dir",
            str(tmp_path / "remote-jobs"),
            "--data-sample",
            "3",
            "--min-iterations",
            "5",
            "--min-duration",
            "0",
            "--warmup",
            "1",
            "--warmup-time",
            "0",
            "--threads",
            "1,2",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "[remote]" in result.output  # the remote harness's own lines were streamed back
    results = read_json(out)
    assert results["remote"]["host"] == "edgepipe-test"
    assert [r["threads"] for r in results["records"]] == [1, 2]
    assert all(r["status"] == "ok" and r["latency_ms"]["iterations"] >= 5 for r in results["records"])
    assert "top1" in results["records"][0]  # the data sample travelled: accuracy was measured there
    assert results["device"]["hostname"]  # the remote fingerprint
    assert out.with_suffix(".csv").exists()
    assert not any((tmp_path / "remote-jobs").iterdir())  # the remote job folder was cleaned up


def test_unreachable_host_is_a_clear_error(ssh_host, tmp_path, tiny_run):
    import re

    closed = _free_port()  # nothing listens there
    config = re.sub(r"Port \d+", f"Port {closed}", ssh_host.read_text()).replace("Host edgepipe-test", "Host nowhere")
    broken = tmp_path / "ssh_config"
    broken.write_text(config)
    artifact = next(tiny_run.artifacts_dir.glob("*-onnx-fp32.onnx"))
    result = CliRunner().invoke(main, ["bench", str(artifact), "--remote", "nowhere", "--ssh-config", str(broken)])
    assert result.exit_code == 2
    assert "copying the artifacts on nowhere failed" in result.output and "without a password" in result.output
    assert "Traceback" not in result.output
