"""HTTP for the client: one urllib3 pool per process, bounded retries, problem+json errors."""

from __future__ import annotations

import email.utils
import io
import json
import os
import time
from typing import Any, Mapping, Optional
from urllib.parse import quote, urlencode

import numpy as np
import urllib3

API_KEY_ENV = "MEDSERVE_API_KEY"


class MedserveError(Exception):
    """A request medserve refused (4xx) or could not serve (5xx, after the retries).

    ``status`` is the HTTP status, ``code`` the problem's stable code (``invalid-parameter``,
    ``item-not-found``, ...), ``detail`` its human-readable detail and ``problem`` the whole
    problem+json document (``parameter``, ``allowed``, ``available``, ... when present).
    """

    def __init__(self, status: int, url: str, problem: Mapping[str, Any]):
        self.status = status
        self.url = url
        self.problem = dict(problem)
        self.code = self.problem.get("code")
        self.detail = self.problem.get("detail") or self.problem.get("title") or ""
        msg = f"medserve answered {status}"
        if self.code:
            msg += f" {self.code}"
        if self.detail:
            msg += f": {self.detail}"
        msg += f" ({url})"
        super().__init__(msg)


def _query_value(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (list, tuple, np.ndarray)):
        return ",".join(_query_value(x) for x in v)
    if isinstance(v, (float, np.floating)):
        return repr(float(v))  # the shortest text that reads back as the same float64
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v)


def encode_query(params: Mapping[str, Any]) -> str:
    """The query string of ``params``: None values left out, booleans ``true``/``false``,
    sequences comma-joined (``size=(64, 64)`` is ``size=64,64``)."""
    pairs = [(k, _query_value(v)) for k, v in params.items() if v is not None]
    return urlencode(pairs, safe=",")


def path_segment(s: str) -> str:
    return quote(str(s), safe="~")


def _retry_after(value: Optional[str], default: float) -> float:
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return default


class Client:
    """A medserve base URL with its credentials and retry policy.

    Safe to use across ``fork`` (DataLoader workers): the connection pool is created lazily
    in each process, never shared with a parent.

    * 503 (server busy, storage unavailable, request timeout): waits ``Retry-After`` seconds
      (at most ``max_retry_wait``) and retries, up to ``busy_retries`` times.
    * connection errors (refused, reset, timed out): retries ``connect_retries`` times after
      0.2, 0.4, 0.8... seconds.
    * any other 4xx/5xx: raises :class:`MedserveError` with the problem's ``detail``.
    """

    def __init__(
        self,
        url: str,
        api_key: Optional[str] = None,
        timeout: float = 120.0,
        busy_retries: int = 8,
        max_retry_wait: float = 30.0,
        connect_retries: int = 3,
    ):
        self.url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.timeout = timeout
        self.busy_retries = busy_retries
        self.max_retry_wait = max_retry_wait
        self.connect_retries = connect_retries
        self._pool: Optional[urllib3.PoolManager] = None
        self._pid: Optional[int] = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pool"] = None
        state["_pid"] = None
        return state

    def _manager(self) -> urllib3.PoolManager:
        if self._pool is None or self._pid != os.getpid():
            self._pool = urllib3.PoolManager(
                num_pools=4,
                maxsize=4,
                retries=False,
                timeout=urllib3.Timeout(connect=10.0, read=self.timeout),
            )
            self._pid = os.getpid()
        return self._pool

    def request(
        self,
        method: str,
        path: str,
        params: Optional[Mapping[str, Any]] = None,
        json_body: Any = None,
        accept: Optional[str] = None,
    ) -> urllib3.BaseHTTPResponse:
        """Sends one request (with the retries above) and returns the 2xx response."""
        url = self.url + path
        query = encode_query(params or {})
        if query:
            url += "?" + query
        headers = {}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if accept:
            headers["Accept"] = accept
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        busy = 0
        failed_connects = 0
        while True:
            try:
                r = self._manager().request(
                    method, url, body=body, headers=headers, redirect=False, preload_content=True
                )
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.NewConnectionError,
                    urllib3.exceptions.TimeoutError, urllib3.exceptions.MaxRetryError,
                    ConnectionError) as e:
                if failed_connects >= self.connect_retries:
                    raise ConnectionError(
                        f"medserve at {self.url} did not answer {method} {path} "
                        f"({failed_connects + 1} attempts): {e}"
                    ) from e
                time.sleep(0.2 * 2**failed_connects)
                failed_connects += 1
                continue
            if 200 <= r.status < 300:
                return r
            if r.status == 503 and busy < self.busy_retries:
                wait = min(_retry_after(r.headers.get("Retry-After"), 1.0), self.max_retry_wait)
                time.sleep(wait)
                busy += 1
                continue
            raise MedserveError(r.status, url, _problem(r))

    def get_json(self, path: str, params: Optional[Mapping[str, Any]] = None) -> Any:
        return json.loads(self.request("GET", path, params, accept="application/json").data)

    def get_npy(self, path: str, params: Optional[Mapping[str, Any]] = None) -> np.ndarray:
        r = self.request("GET", path, params, accept="application/x-npy")
        return np.load(io.BytesIO(r.data), allow_pickle=False)

    def get_npz(
        self, path: str, params: Optional[Mapping[str, Any]] = None, method: str = "GET",
        json_body: Any = None,
    ) -> dict:
        r = self.request(method, path, params, json_body=json_body, accept="application/x-npz")
        with np.load(io.BytesIO(r.data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def _problem(r: urllib3.BaseHTTPResponse) -> dict:
    try:
        doc = json.loads(r.data)
        if isinstance(doc, dict):
            return doc
    except ValueError:
        pass
    text = r.data[:500].decode("utf-8", "replace") if r.data else ""
    return {"status": r.status, "detail": text}
