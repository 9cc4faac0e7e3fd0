"""A stand-in for medserve's batch routes, for as long as the binary under test lacks them.

It listens on 127.0.0.1, forwards every request to a real medserve, and answers the three
batch routes itself (the contract of issue 10) by asking that medserve for the items' lists
and arrays:

* ``GET .../splits/{split}/batches``: the plan;
* ``GET .../splits/{split}/batches/{b}``: one rank's batch as npz;
* ``POST .../splits/{split}/batch`` with ``{"ids": [...]}``: named items as npz;
* ``GET .../items/{item}/image`` with random parameters (``rand_flip``, ...), only while the
  binary refuses them (they landed before the batch routes); else forwarded.

Its order is a Fisher-Yates shuffle driven by SHA-256 (a pure function of seed, epoch and N,
listing order without a seed), not necessarily the server's bits; the tests only rely on the
contract's properties. Random transforms draw exactly as ``src/pipeline/augment.rs``
documents (version 1) and are applied through the item routes' deterministic ``flip`` and
``rotate``: comparing its batches with the image route's own random parameters
(test_item_dataset_draws_as_the_batches) checks the two agree. conftest.py uses it only when the binary answers the plan route with 404.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, quote, unquote, urlencode

import numpy as np
import urllib3

BATCH_KEYS = {"batch_size", "seed", "epoch", "rank", "world_size", "drop_last", "class"}
RANDOM_KEYS = {"rand_flip", "rand_flip_axis", "rand_rotate", "rand_rotate_prob"}
SPLIT_RE = re.compile(r"^/v1/datasets/([^/]+)/splits/([^/]+)/(batches|batches/([^/]+)|batch)$")
IMAGE_RE = re.compile(r"^/v1/datasets/([^/]+)/splits/([^/]+)/items/([^/]+)/image$")


class Problem(Exception):
    def __init__(self, status: int, code: str, detail: str, **extra):
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra

    def body(self) -> bytes:
        return json.dumps({"type": "about:blank", "title": self.code, "status": self.status,
                           "detail": self.detail, "code": self.code, **self.extra}).encode()


class Upstream(Exception):
    def __init__(self, r):
        super().__init__(r.status)
        self.r = r


def order(n: int, seed: Optional[int], epoch: int) -> List[int]:
    idx = list(range(n))
    if seed is None:
        return idx
    for i in range(n - 1, 0, -1):
        h = hashlib.sha256(f"medserve-shim-order\0{seed}\0{epoch}\0{n}\0{i}\0".encode()).digest()
        j = int.from_bytes(h[:8], "little") % (i + 1)
        idx[i], idx[j] = idx[j], idx[i]
    return idx


def unit(seed: int, epoch: int, dataset: str, split: str, item: str, t: str, n: int) -> float:
    """augment.rs's draw n of transform t, in [0, 1)."""
    h = hashlib.sha256()
    for part in ("medserve-draw-v1", str(seed), str(epoch), dataset, split, item, t, str(n)):
        h.update(part.encode())
        h.update(b"\0")
    bits = int.from_bytes(h.digest()[:8], "little")
    return (bits >> 11) * 2.0**-53


def _int(q: Dict[str, str], key: str, default=None, lo=0, hi=2**63 - 1) -> Optional[int]:
    if key not in q:
        return default
    try:
        v = int(q[key])
    except ValueError:
        v = None
    if v is None or not lo <= v <= hi:
        raise Problem(400, "invalid-parameter", f"invalid parameter '{key}': '{q[key]}'",
                      parameter=key, allowed=f"{lo}..={hi}")
    return v


def _bool(q: Dict[str, str], key: str) -> bool:
    v = q.get(key, "false")
    if v not in ("true", "false"):
        raise Problem(400, "invalid-parameter", f"invalid parameter '{key}': '{v}'",
                      parameter=key, allowed="true, false")
    return v == "true"


class Shim:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.http = urllib3.PoolManager(maxsize=16, retries=False)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._upstream_draws: Optional[bool] = None

    def upstream_draws(self, path_and_query: str, headers) -> bool:
        """Whether medserve's image route takes the random parameters itself (it does from
        the commit that added them): asked once, with the first such request."""
        if self._upstream_draws is None:
            r = self.http.request("GET", self.upstream + path_and_query, headers=headers)
            refused = r.status == 400 and r.data.startswith(b"{") and (
                json.loads(r.data).get("parameter") in RANDOM_KEYS | {"seed", "epoch"})
            self._upstream_draws = not refused
        return self._upstream_draws

    def start(self) -> "Shim":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # upstream ----------------------------------------------------------------------------

    def get(self, path: str, params=None, headers=None):
        url = self.upstream + path + ("?" + urlencode(params, safe=",") if params else "")
        r = self.http.request("GET", url, headers=headers or {})
        if r.status != 200:
            raise Upstream(r)
        return r

    def items(self, ds: str, split: str, klass: Optional[str], headers) -> List[dict]:
        out: List[dict] = []
        while True:
            p = {"offset": len(out), "limit": 1000}
            if klass is not None:
                p["class"] = klass
            doc = json.loads(self.get(f"/v1/datasets/{ds}/splits/{split}/items", p, headers).data)
            out.extend(doc["items"])
            if not doc["items"] or len(out) >= doc["total"]:
                return out

    # the routes --------------------------------------------------------------------------

    def plan(self, ds, split, q, headers) -> Tuple[dict, List[dict]]:
        b = _int(q, "batch_size", None, 1, 4096)
        if b is None:
            raise Problem(400, "invalid-parameter", "parameter 'batch_size' is required",
                          parameter="batch_size", allowed="1..=4096")
        w = _int(q, "world_size", 1, 1, 4096)
        seed = _int(q, "seed", None)
        drop_last = _bool(q, "drop_last")
        items = self.items(ds, split, q.get("class"), headers)
        n = len(items)
        step = b * w
        k = n // step if drop_last else -(-n // step)
        plan = {"dataset": ds, "split": split, "class": q.get("class"), "samples": n,
                "batch_size": b, "world_size": w, "drop_last": drop_last, "seed": seed,
                "batches": k, "padded": 0 if drop_last else k * step - n,
                "order": {"algorithm": "fisher-yates-sha256", "version": 1}}
        return plan, items

    def batch(self, ds, split, b_text, q, headers) -> bytes:
        plan, items = self.plan(ds, split, q, headers)
        try:
            b = int(b_text)
        except ValueError:
            raise Problem(400, "invalid-parameter", f"invalid batch '{b_text}'", parameter="b")
        epoch = _int(q, "epoch", 0)
        rank = _int(q, "rank", 0)
        if rank >= plan["world_size"]:
            raise Problem(400, "invalid-parameter", "rank must be below world_size",
                          parameter="rank", allowed=f"0..={plan['world_size'] - 1}")
        if b >= plan["batches"]:
            raise Problem(404, "batch-not-found",
                          f"batch {b} is past the plan's {plan['batches']} batches",
                          available=f"0..={plan['batches'] - 1}")
        n, bs, w = plan["samples"], plan["batch_size"], plan["world_size"]
        perm = order(n, plan["seed"], epoch)
        first = b * bs * w + rank * bs
        picks = [(perm[p % n], p >= n) for p in range(first, first + bs)]
        return self.assemble(ds, split, [items[i] for i, _ in picks], [pad for _, pad in picks],
                             q, plan["seed"], epoch, headers)

    def by_ids(self, ds, split, q, body, headers) -> bytes:
        try:
            ids = json.loads(body)["ids"]
            assert isinstance(ids, list) and all(isinstance(i, str) for i in ids) and ids
        except Exception:
            raise Problem(400, "invalid-body", 'the body must be {"ids": ["<item id>", ...]}')
        listed = {it["id"]: it for it in self.items(ds, split, None, headers)}
        missing = [i for i in ids if i not in listed]
        if missing:
            raise Problem(404, "item-not-found", f"no item '{missing[0]}' in {ds}/{split}")
        seed = _int(q, "seed", None)
        return self.assemble(ds, split, [listed[i] for i in ids], [False] * len(ids), q, seed,
                             _int(q, "epoch", 0), headers)

    @staticmethod
    def draw(rand, seed, epoch, ds, split, item) -> Tuple[Dict[str, str], Optional[bool], Optional[float]]:
        """The deterministic parameters the random ones drew for one item, and the draws
        (None: not asked for; NaN angle: not fired)."""
        if rand and seed is None:
            raise Problem(400, "invalid-parameter", "random parameters need 'seed'",
                          parameter="seed")
        p: Dict[str, str] = {}
        flip = angle = None
        if "rand_flip" in rand:
            flip = unit(seed, epoch, ds, split, item, "rand_flip", 0) < float(rand["rand_flip"])
            if flip:
                p["flip"] = rand.get("rand_flip_axis", "all")
        if "rand_rotate" in rand:
            r = float(rand["rand_rotate"])
            fired = (unit(seed, epoch, ds, split, item, "rand_rotate", 0)
                     < float(rand.get("rand_rotate_prob", 0.1)))
            angle = -r + 2 * r * unit(seed, epoch, ds, split, item, "rand_rotate", 1)
            if fired:
                p["rotate"] = repr(angle)
            else:
                angle = math.nan
        return p, flip, angle

    def image(self, ds, split, item, q, headers):
        """The image route with random parameters: drawn here, applied by medserve."""
        rand = {k: v for k, v in q.items() if k in RANDOM_KEYS}
        seed = _int(q, "seed", None)
        epoch = _int(q, "epoch", 0)
        params = {k: v for k, v in q.items() if k not in RANDOM_KEYS | {"seed", "epoch"}}
        drawn, _, _ = self.draw(rand, seed, epoch, ds, split, unquote(item))
        r = self.get(f"/v1/datasets/{ds}/splits/{split}/items/{item}/image", {**params, **drawn},
                     headers)
        augment = ";".join(f"{k}={v}" for k, v in drawn.items()) or "none"
        return r, augment

    def assemble(self, ds, split, items, pads, q, seed, epoch, headers) -> bytes:
        params = {k: v for k, v in q.items() if k not in BATCH_KEYS and k not in RANDOM_KEYS}
        rand = {k: v for k, v in q.items() if k in RANDOM_KEYS}
        if rand and seed is None:
            raise Problem(400, "invalid-parameter", "random parameters need 'seed'",
                          parameter="seed")
        detail = json.loads(self.get(f"/v1/datasets/{ds}", None, headers).data)
        classes = [c["name"] for c in detail.get("classes") or []]
        images, labels, flips, angles = [], [], [], []
        for it in items:
            path = f"/v1/datasets/{ds}/splits/{split}/items/{quote(it['id'], safe='~')}"
            if detail["kind"] == "classification":
                drawn, flip, angle = self.draw(rand, seed, epoch, ds, split, it["id"])
                p = dict(params, format="npy", **drawn)
                flips.append(flip)
                angles.append(angle)
                images.append(np.load(io.BytesIO(self.get(path + "/image", p, headers).data)))
                labels.append(classes.index(it["class"]))
            else:
                if {"rand_rotate", "rand_rotate_prob"} & set(rand):
                    raise Problem(400, "invalid-parameter", "volumes take no rand_rotate",
                                  parameter="rand_rotate")
                drawn, flip, _ = self.draw(rand, seed, epoch, ds, split, it["id"])
                flips.append(flip)
                z = np.load(io.BytesIO(self.get(path + "/volume.npz",
                                                dict(params, part="both", **drawn), headers).data))
                images.append(z["image"])
                labels.append(z["label"])
        arrays = {"image": np.stack(images).astype(np.float32),
                  "label": (np.array(labels, dtype=np.int64) if detail["kind"] == "classification"
                            else np.stack(labels).astype(np.uint8)),
                  "id": np.array([it["id"] for it in items], dtype=str),
                  "pad": np.array(pads, dtype=bool)}
        if "rand_flip" in rand:
            arrays["rand_flip"] = np.array(flips, dtype=bool)
        if "rand_rotate" in rand:
            arrays["rand_rotate"] = np.array(angles, dtype=np.float64)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def _handler(self):
        shim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, ctype: str, extra=()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self):
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fwd = {k: v for k, v in self.headers.items()
                       if k.lower() in ("authorization", "accept", "content-type")}
                q = dict(parse_qsl(query, keep_blank_values=True))
                im = IMAGE_RE.match(path)
                if (im and self.command == "GET" and RANDOM_KEYS & set(q)
                        and not shim.upstream_draws(self.path, fwd)):
                    try:
                        r, augment = shim.image(*im.groups(), q, fwd)
                        keep = [(k, v) for k, v in r.headers.items()
                                if k.lower() in ("etag", "x-shape", "x-dtype")]
                        self._send(200, r.data, r.headers["Content-Type"],
                                   keep + [("X-Augment", augment)])
                    except Problem as p:
                        self._send(p.status, p.body(), "application/problem+json")
                    except Upstream as u:
                        self._send(u.r.status, u.r.data, u.r.headers.get("Content-Type", ""))
                    return
                m = SPLIT_RE.match(path)
                if not m:  # everything else is the real server's
                    r = shim.http.request(self.command, shim.upstream + self.path, body=body or None,
                                          headers=fwd)
                    keep = [(k, v) for k, v in r.headers.items()
                            if k.lower() not in ("content-length", "content-type", "connection",
                                                 "transfer-encoding", "content-encoding")]
                    self._send(r.status, r.data, r.headers.get("Content-Type", ""), keep)
                    return
                ds, split, route, b = m.group(1), m.group(2), m.group(3), m.group(4)
                try:
                    if route == "batches" and self.command == "GET":
                        plan, _ = shim.plan(ds, split, q, fwd)
                        self._send(200, json.dumps(plan).encode(), "application/json")
                    elif b is not None and self.command == "GET":
                        self._send(200, shim.batch(ds, split, b, q, fwd), "application/x-npz")
                    elif route == "batch" and self.command == "POST":
                        self._send(200, shim.by_ids(ds, split, q, body, fwd), "application/x-npz")
                    else:
                        raise Problem(405, "method-not-allowed", f"{self.command} {path}")
                except Problem as p:
                    self._send(p.status, p.body(), "application/problem+json")
                except Upstream as u:
                    self._send(u.r.status, u.r.data, u.r.headers.get("Content-Type", ""),
                               [(k, v) for k, v in u.r.headers.items() if k.lower() == "retry-after"])

            do_GET = do_POST = do_HEAD = _handle

        return Handler


if __name__ == "__main__":  # python batch_shim.py UPSTREAM: prints its URL, serves until killed
    import sys

    shim = Shim(sys.argv[1])
    print(shim.url, flush=True)
    shim.server.serve_forever()
