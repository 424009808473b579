"""A real S3-compatible server for tests: moto's server on 127.0.0.1 (a free port), started by the test.

`s3` fixture: the server with buckets `raw` and `shop`, this process's storage layer pointed at it, and
the flags (`--s3_endpoint_url=…` and keys) that point a child process (`shopllm …`) at it too.
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from dataclasses import dataclass

import pytest

from shopllm import storage

KEY, SECRET = "testing", "testing"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3:
    endpoint: str
    options: storage.StorageOptions

    @property
    def flags(self) -> list[str]:
        return [
            f"--s3_endpoint_url={self.endpoint}",
            f"--s3_access_key_id={KEY}",
            f"--s3_secret_access_key={SECRET}",
            "--s3_region_name=us-east-1",
        ]

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture
def s3(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    options = storage.StorageOptions(endpoint, KEY, SECRET, None, "us-east-1")
    before = storage.options()
    storage.configure(options)
    s3 = S3(endpoint, options)
    urllib.request.urlopen(
        urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    )  # moto's state is per process
    for bucket in ("raw", "shop"):
        s3.client().create_bucket(Bucket=bucket)
    yield s3
    storage.configure(before)
    server.stop()
