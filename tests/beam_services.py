"""Beam's portable job service and an external SDK worker pool, started by the test on 127.0.0.1.

This is the Fn API that Flink, Spark and Dataflow workers speak: pipelines submitted with `flags` are
executed by worker processes the pool starts, which share nothing with the test process but what the
pipeline carries (and their environment).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from tests.s3server import free_port


@dataclass
class PortableRunner:
    job_port: int
    worker_port: int

    @property
    def flags(self) -> list[str]:
        return [
            "--runner=PortableRunner",
            f"--job_endpoint=localhost:{self.job_port}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{self.worker_port}",
        ]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@pytest.fixture(scope="module")
def portable_runner(tmp_path_factory):
    """A job service and a worker pool whose workers get no S3 settings from their environment: what they
    need must come with the pipeline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # the pool starts each worker as `python -c …` from PATH: this interpreter's (the venv's), not another
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    job_port, worker_port = free_port(), free_port()
    staging = tmp_path_factory.mktemp("beam-staging")
    job = _start(
        ["apache_beam.runners.portability.local_job_service_main", f"--port={job_port}", f"--staging_dir={staging}"],
        env,
    )
    pool = _start(["apache_beam.runners.worker.worker_pool_main", f"--service_port={worker_port}"], env)
    try:
        _wait_for_port(job_port, job)
        _wait_for_port(worker_port, pool)
        yield PortableRunner(job_port, worker_port)
    finally:
        for proc in (job, pool):
            proc.terminate()
        for proc in (job, pool):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
