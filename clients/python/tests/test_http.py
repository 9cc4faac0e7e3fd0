"""The HTTP layer against a tiny local fake server: 503 + Retry-After, connection errors,
the API key header, query encoding."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import medserve
from medserve._http import _retry_after, encode_query


class Fake:
    """Answers each request with the next of `script` ((status, headers, body)); records the
    requests' paths and headers."""

    def __init__(self, script):
        self.script = list(script)
        self.seen = []
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                fake.seen.append((self.path, dict(self.headers), time.monotonic()))
                status, headers, body = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


BUSY = (503, {"Retry-After": "1", "Content-Type": "application/problem+json"},
        json.dumps({"status": 503, "code": "server-busy", "detail": "the CPU queue is full"}).encode())
OK = (200, {"Content-Type": "application/json"}, b'{"ok": true}')


def test_503_waits_retry_after_then_succeeds():
    fake = Fake([BUSY, BUSY, OK])
    try:
        t = time.monotonic()
        assert medserve.Client(fake.url).get_json("/x") == {"ok": True}
        assert len(fake.seen) == 3
        gaps = [b[2] - a[2] for a, b in zip(fake.seen, fake.seen[1:])]
        assert all(g >= 0.95 for g in gaps), gaps  # Retry-After: 1 honoured each time
        assert time.monotonic() - t < 10
    finally:
        fake.close()


def test_503_retries_are_bounded():
    fake = Fake([BUSY])
    try:
        with pytest.raises(medserve.MedserveError) as e:
            medserve.Client(fake.url, busy_retries=2, max_retry_wait=0.1).get_json("/x")
        assert e.value.status == 503 and e.value.code == "server-busy"
        assert "the CPU queue is full" in str(e.value)
        assert len(fake.seen) == 3  # the request and two retries
    finally:
        fake.close()


def test_4xx_is_not_retried():
    fake = Fake([(400, {"Content-Type": "application/problem+json"},
                  b'{"status": 400, "code": "invalid-parameter", "detail": "bad size", "parameter": "size"}')])
    try:
        with pytest.raises(medserve.MedserveError) as e:
            medserve.Client(fake.url).get_json("/x")
        assert (e.value.status, e.value.code, e.value.detail) == (400, "invalid-parameter", "bad size")
        assert len(fake.seen) == 1
    finally:
        fake.close()


def test_connection_errors_are_retried_briefly():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    t = time.monotonic()
    with pytest.raises(ConnectionError) as e:
        medserve.Client(f"http://127.0.0.1:{port}", connect_retries=2).get_json("/x")
    took = time.monotonic() - t
    assert "3 attempts" in str(e.value)
    assert 0.5 <= took < 5, took  # slept 0.2 + 0.4 s between the attempts


def test_api_key_header(monkeypatch):
    fake = Fake([OK])
    try:
        monkeypatch.setenv("MEDSERVE_API_KEY", "k-0123456789abcdef")
        medserve.Client(fake.url).get_json("/x")
        monkeypatch.delenv("MEDSERVE_API_KEY")
        medserve.Client(fake.url).get_json("/y")
        medserve.Client(fake.url, api_key="explicit-0123456789").get_json("/z")
        auth = [h.get("Authorization") for _, h, _ in fake.seen]
        assert auth == ["Bearer k-0123456789abcdef", None, "Bearer explicit-0123456789"]
    finally:
        fake.close()


def test_query_encoding():
    assert encode_query({"size": (64, 64), "drop_last": False, "seed": None, "rand_rotate": 0.26,
                         "class": "Head CT", "flip": [0, 1]}) == \
        "size=64,64&drop_last=false&rand_rotate=0.26&class=Head+CT&flip=0,1"
    assert encode_query({"rand_flip": np.float64(0.5), "seed": np.int64(3), "clip": np.True_,
                         "size": np.array([32, 32])}) == "rand_flip=0.5&seed=3&clip=true&size=32,32"
    assert _retry_after("5", 1.0) == 5.0
    assert _retry_after(None, 1.0) == 1.0
    assert _retry_after("garbage", 2.0) == 2.0
