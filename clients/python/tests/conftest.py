"""Fixtures: the real medserve binary serving its sample data.

``MEDSERVE_URL`` names a running medserve serving ``medserve sample-data`` in
``MEDSERVE_DATA`` (what scripts/check-client.sh starts); without it this writes the sample data
and starts ``MEDSERVE_BIN`` (default: the repository's target/debug/medserve) itself on a free
127.0.0.1 port. One test starts a second server, with an API key, from the same two.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import time

import pytest
import urllib3

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="session")
def medserve_bin():
    return os.environ.get("MEDSERVE_BIN", str(REPO / "target" / "debug" / "medserve"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, medserve_bin):
    """The sample data the server serves (MEDSERVE_DATA, or written here)."""
    if os.environ.get("MEDSERVE_DATA"):
        return pathlib.Path(os.environ["MEDSERVE_DATA"])
    data = tmp_path_factory.mktemp("sample") / "data"
    subprocess.run([medserve_bin, "sample-data", str(data)], check=True,
                   stdout=subprocess.DEVNULL)
    return data


def start_medserve(binary, data, log_path, *flags):
    """Starts `binary serve` on a free port; returns (process, url) once /readyz answers."""
    port = _free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data", str(data), *flags],
        stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if urllib3.request("GET", url + "/readyz", retries=False).status == 200:
                return proc, url
        except urllib3.exceptions.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"{binary} serve did not become ready: {pathlib.Path(log_path).read_text()}")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def medserve_url(tmp_path_factory, medserve_bin, data_dir):
    url = os.environ.get("MEDSERVE_URL")
    if url:
        yield url.rstrip("/")
        return
    proc, url = start_medserve(medserve_bin, data_dir,
                               tmp_path_factory.mktemp("log") / "server.log")
    yield url
    stop(proc)


@pytest.fixture(scope="session")
def url(medserve_url):
    """medserve, checked to have the batch routes (a binary older than them fails here)."""
    r = urllib3.request(
        "GET", medserve_url + "/v1/datasets/medmnist/splits/train/batches?batch_size=2",
        retries=False)
    assert r.status == 200, (f"GET .../batches answered {r.status}: is {medserve_url} a "
                             f"medserve with the batch routes? {r.data[:300]!r}")
    return medserve_url
