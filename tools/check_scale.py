#!/usr/bin/env python3
"""Cache-affine scale-out on loopback (issue 13 §3), run by scripts/check-scale.sh.

Three medserve replicas on 127.0.0.1 behind Debian's nginx, which hashes each request on
dataset/split/item (`hash $medserve_item consistent`, the key the Kubernetes Ingress uses too,
deploy/k8s/ingress-nginx/controller-configmap.yaml) and retries another replica when one fails
(`proxy_next_upstream`). It shows, in one run:

  (a) every item's requests go to one replica, and a second pass over the same requests (in
      another order) is served from the replicas' caches: hit ratio = 1 - bodies encoded in the
      pass / requests, from each replica's /metrics; the same two passes through round robin
      over three fresh replicas give the comparison;
  (b) `kill -9` of one replica during a bounded wrk load: the share of failed requests, and
      afterwards only that replica's items have moved, every answer's ETag unchanged;
  (c) the replica restarted on its port: its items return to it;
  (d) a hot item (every other request of a wrk load): behind nginx's consistent hash its
      replica answers most requests; behind HAProxy's bounded-load consistent hash
      (`hash-balance-factor 125`) the busiest replica answers at most half, while without a
      hot item, one client at a time, the second-pass hit ratio stays at least 0.8 (nginx: 0.9).

Every request is an image or slice body (both cached as encoded bodies, so "encoded" is a
cache miss). Prints one line per check and `scale checks: N passed, M failed`. Starts and
stops only its own processes (by PID); everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ITEM = re.compile(r"^/v1/datasets/([^/]+)/splits/([^/]+)/items/([^/?]+)")

NGINX_CONF = """\
{user}worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # The key deploy/k8s/ingress-nginx/controller-configmap.yaml defines for ingress-nginx.
    map $uri $medserve_item {{
        ~^/v1/datasets/(?<d>[^/]+)/splits/(?<s>[^/]+)/items/(?<i>[^/]+) $d/$s/$i;
        default $uri;
    }}
    upstream medserve {{
        {balance}
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://medserve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 75s;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


# HAProxy's bounded-load consistent hashing (`hash-balance-factor`): a replica already serving
# more than 125% of the average load in flight passes the request to the next one on the ring,
# so a hot item spreads while every other item keeps its replica. The key is the same
# dataset/split/item part of the path (`field(4,/,5)`: `<dataset>/splits/<split>/items/<item>`).
HAPROXY_CONF = """\
global
    maxconn 1024
    pidfile {dir}/haproxy.pid
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 75s
    retries 2
    option redispatch
frontend medserve
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance hash path,field(4,/,5)
    hash-type consistent
    hash-balance-factor {factor}
    http-reuse always
    http-response set-header X-Upstream %[srv_name]
{servers}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def wait_ready(url: str, proc: subprocess.Popen, what: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            if get(url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} never answered {url}")


class Replica:
    def __init__(self, binary: str, data: str, work: str, name: str, cache_mb: int):
        self.binary, self.data, self.name, self.cache_mb = binary, data, name, cache_mb
        self.port = free_port()
        self.log = os.path.join(work, f"{name}.log")
        self.proc: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [self.binary, "serve", "--data", self.data, "--listen", self.addr,
               "--cache-mb", str(self.cache_mb)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        wait_ready(f"http://{self.addr}/readyz", self.proc, self.name)

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def counters(self) -> dict[str, float]:
        _, _, body = get(f"http://{self.addr}/metrics")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


class Nginx:
    def __init__(self, work: str, replicas: list[Replica], balance: str):
        self.dir = os.path.join(work, f"nginx-{balance.split()[0] if balance else 'rr'}")
        for sub in ("", "body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.port = free_port()
        servers = "\n".join(
            f"        server {r.addr} max_fails=1 fail_timeout=3s;" for r in replicas)
        conf = NGINX_CONF.format(
            user="user root root;\n" if os.geteuid() == 0 else "",
            dir=self.dir, balance=balance, servers=servers, port=self.port)
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(
            ["nginx", "-p", self.dir, "-c", self.conf, "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "stderr.log"), "wb"))
        wait_ready(f"{self.url}/healthz", self.proc, "nginx")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class HAProxy:
    def __init__(self, work: str, replicas: list[Replica], factor: int):
        self.dir = os.path.join(work, "haproxy")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        # Servers named by their address, so X-Upstream reads as nginx's $upstream_addr does.
        servers = "\n".join(f"    server {r.addr.replace(':', '_')} {r.addr}" for r in replicas)
        self.conf = os.path.join(self.dir, "haproxy.cfg")
        with open(self.conf, "w") as f:
            f.write(HAPROXY_CONF.format(dir=self.dir, port=self.port, factor=factor,
                                        servers=servers))
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", self.conf], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "stderr.log"), "wb"))
        wait_ready(f"{self.url}/healthz", self.proc, "haproxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop: finish what is in flight
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def workload(base: str) -> list[str]:
    """Image and slice bodies of every item the sample data has: 2 per image, 6 per volume."""
    paths = []
    _, _, body = get(f"{base}/v1/datasets")
    for ds in json.loads(body):
        for split in ds["splits"]:
            _, _, page = get(f"{base}/v1/datasets/{ds['name']}/splits/{split}/items?limit=1000")
            for it in json.loads(page)["items"]:
                url = it["url"]
                if ds["kind"] == "classification":
                    paths += [f"{url}/image?size=32,32", f"{url}/image?size=32,32&format=npy"]
                else:
                    paths += [f"{url}/slice?axis={a}{f}" for a in (0, 1, 2)
                              for f in ("", "&format=npy")]
    return paths


def hx_owner_keys(paths: list[str]) -> set[str]:
    return {item_key(p) for p in paths}


def item_key(path: str) -> str:
    m = ITEM.match(path)
    return "/".join(m.groups()) if m else path


def run_pass(base: str, paths: list[str], threads: int = 4) -> dict[str, tuple[int, str, str]]:
    """path -> (status, ETag, the replica that answered)."""
    def one(p: str):
        status, headers, _ = get(base + p)
        return p, (status, headers.get("etag", ""), headers.get("x-upstream", ""))
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return dict(pool.map(one, paths))


def encoded(replicas: list[Replica]) -> float:
    return sum(r.counters().get("medserve_encode_total", 0) for r in replicas)


def two_passes(base: str, paths: list[str], replicas: list[Replica], seed: int,
               threads: int = 4):
    first = run_pass(base, paths, threads)
    before = encoded(replicas)
    shuffled = paths[:]
    random.Random(seed).shuffle(shuffled)
    second = run_pass(base, shuffled, threads)
    misses = encoded(replicas) - before
    return first, second, 1.0 - misses / len(paths)


def wrk_load(base: str, paths_file: str, seconds: int) -> subprocess.Popen:
    env = dict(os.environ, SCALE_PATHS=paths_file)
    lua = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scale_paths.lua")
    return subprocess.Popen(
        ["wrk", "-t", "2", "-c", "16", "-d", f"{seconds}s", "--timeout", "10s", "-s", lua, base],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True)


def hot_load(base: str, paths: list[str], hot: str, work: str, seconds: int, name: str):
    """A wrk load where every other request is `hot`: (requests, failed, share of the busiest
    replica, replicas that served the hot path... counted from the answers' X-Upstream)."""
    mixed = [x for p in paths for x in (p, hot)]
    paths_file = os.path.join(work, f"hot-{name}.txt")
    with open(paths_file, "w") as f:
        f.write("\n".join(mixed) + "\n")
    env = dict(os.environ, SCALE_PATHS=paths_file, SCALE_COUNT="1")
    lua = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scale_paths.lua")
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", "32", "-d", f"{seconds}s", "--timeout", "10s", "-s", lua, base],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True, timeout=seconds + 60).stdout
    requests, failed = wrk_counts(out)
    per = {m.group(1): int(m.group(2)) for m in re.finditer(r"^upstream (\S+) (\d+)$", out, re.M)}
    busiest = max(per.values(), default=0) / max(sum(per.values()), 1)
    return requests, failed, busiest, per


def wrk_counts(out: str) -> tuple[int, int]:
    """(requests, failed: non-2xx/3xx answers + socket errors) from wrk's summary."""
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    failed = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        failed += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        failed += sum(int(x) for x in m.groups())
    return requests, failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True, help="sample data folder")
    ap.add_argument("--cache-mb", type=int, default=256)
    ap.add_argument("--load-seconds", type=int, default=12)
    ap.add_argument("--hot-seconds", type=int, default=6)
    args = ap.parse_args()

    results: list[tuple[bool, str]] = []

    def check(ok: bool, what: str) -> None:
        results.append((ok, what))
        print(f"{'PASS' if ok else 'FAIL'}: {what}", flush=True)

    work = tempfile.mkdtemp(prefix="medserve-scale-")
    procs: list = []

    def cluster(prefix: str, balance: str) -> tuple[list[Replica], Nginx]:
        """Three fresh replicas and nginx in front of them."""
        replicas = [Replica(args.bin, args.data, work, f"{prefix}{i}", args.cache_mb)
                    for i in range(3)]
        for r in replicas:
            r.start()
            procs.append(r)
        balancer = Nginx(work, replicas, balance)
        procs.append(balancer)
        return replicas, balancer

    try:
        # (a) cache affinity: hash on the item, against round robin.
        replicas, nginx = cluster("r", "hash $medserve_item consistent;")
        paths = workload(nginx.url)
        keys = {item_key(p) for p in paths}
        print(f"workload: {len(paths)} image and slice requests over {len(keys)} items")
        first, second, hit = two_passes(nginx.url, paths, replicas, seed=1)
        bad = [p for p, (s, _, _) in {**first, **second}.items() if s != 200]
        check(not bad, f"every answer of both passes is 200 ({len(bad)} not: {bad[:3]})")
        owner: dict[str, set[str]] = {}
        for answers in (first, second):
            for p, (_, _, up) in answers.items():
                owner.setdefault(item_key(p), set()).add(up)
        split = [k for k, ups in owner.items() if len(ups) != 1]
        share = {r.addr: sum(1 for ups in owner.values() if ups == {r.addr}) for r in replicas}
        check(not split, f"each item's requests went to one replica (items per replica: "
                         f"{sorted(share.values())}; {len(split)} items on several)")
        check(hit >= 0.9, f"hashing: second-pass cache hit ratio {hit:.3f} (goal at least 0.9)")

        # (b) kill -9 of one replica during a bounded load.
        victim = max(replicas, key=lambda r: share[r.addr])
        paths_file = os.path.join(work, "paths.txt")
        with open(paths_file, "w") as f:
            f.write("\n".join(paths) + "\n")
        load = wrk_load(nginx.url, paths_file, args.load_seconds)
        time.sleep(args.load_seconds / 3)
        victim.kill9()
        out, _ = load.communicate(timeout=args.load_seconds + 60)
        requests, failed = wrk_counts(out)
        ratio = failed / max(requests, 1)
        check(ratio <= 0.005, f"kill -9 of {victim.name} ({share[victim.addr]} items) mid-load: "
                              f"{failed} of {requests} requests failed ({100 * ratio:.3f}%, "
                              f"at most 0.5%)")
        after = run_pass(nginx.url, paths, threads=1)
        moved_wrongly = [p for p, (_, _, up) in after.items()
                         if first[p][2] != victim.addr and up != first[p][2]]
        victims_keys = [p for p in paths if first[p][2] == victim.addr]
        rehomed = all(after[p][2] not in ("", victim.addr) for p in victims_keys)
        check(not moved_wrongly and rehomed,
              f"only {victim.name}'s items moved ({len(victims_keys)} requests rehomed; "
              f"{len(moved_wrongly)} others moved)")
        changed = [p for p in paths if after[p][1] != first[p][1] or after[p][0] != 200]
        check(not changed, f"every answer's ETag is unchanged after the failover "
                           f"({len(changed)} differ)")

        # (c) the replica comes back on its port and gets its items back.
        victim.start()
        # nginx tries a failed server again once `fail_timeout` (3 s) has passed, on a clock
        # with one-second steps: "more than 3 s" can take up to 4 s of wall time. Wait for the
        # first answer from the victim (bounded) instead of guessing a sleep.
        started = time.monotonic()
        while time.monotonic() - started < 10:
            if run_pass(nginx.url, victims_keys[:1], threads=1)[victims_keys[0]][2] == victim.addr:
                break
            time.sleep(0.25)
        print(f"{victim.name} got its first request back {time.monotonic() - started:.1f} s "
              f"after it was ready")
        back = run_pass(nginx.url, paths, threads=1)
        returned = [p for p in paths if back[p][2] == first[p][2]]
        check(len(returned) == len(paths),
              f"after {victim.name} restarted, {len(returned)} of {len(paths)} requests went "
              f"to their first replica again")

        # Round robin over three fresh replicas, for the comparison.
        for p in reversed(procs):
            p.stop()
        procs.clear()
        fresh, rr = cluster("rr", "")
        _, _, rr_hit = two_passes(rr.url, paths, fresh, seed=1)
        check(rr_hit < hit, f"round robin: second-pass hit ratio {rr_hit:.3f} "
                            f"(hashing {hit:.3f})")

        # (d) One hot item (every other request): nginx's consistent hash sends all of it to
        # its replica; HAProxy's bounded-load consistent hash spreads it and keeps the rest.
        hot = next(p for p in paths if "/image?" in p)
        for p in reversed(procs):
            p.stop()
        procs.clear()
        _, plain = cluster("n", "hash $medserve_item consistent;")
        run_pass(plain.url, paths)
        n_req, n_fail, n_busy, _ = hot_load(plain.url, paths, hot, work, args.hot_seconds, "nginx")
        for p in reversed(procs):
            p.stop()
        procs.clear()
        bounded_reps = [Replica(args.bin, args.data, work, f"h{i}", args.cache_mb)
                        for i in range(3)]
        for r in bounded_reps:
            r.start()
            procs.append(r)
        hx = HAProxy(work, bounded_reps, factor=125)
        procs.append(hx)
        def affinity(threads: int, seed: int) -> tuple[list[str], float]:
            one, two, ratio = two_passes(hx.url, paths, bounded_reps, seed=seed,
                                         threads=threads)
            owners: dict[str, set[str]] = {}
            for answers in (one, two):
                for p, (_, _, up) in answers.items():
                    owners.setdefault(item_key(p), set()).add(up)
            return [k for k, ups in owners.items() if len(ups) != 1], ratio

        # One request at a time the bound is one request per replica; a replica HAProxy still
        # counts busy with the previous answer (released a moment after the client has it)
        # passes the next request on, so now and then an item moves, more often on a busy
        # machine (0.96-1.00 measured here, with and without a fuzzer on the same cores): the
        # check is that most requests still find their item cached, the moved items printed.
        hx_split, hx_hit = affinity(threads=1, seed=2)
        check(hx_hit >= 0.8,
              f"HAProxy bounded-load hashing, one client: second-pass hit ratio {hx_hit:.3f} "
              f"(at least 0.8; {len(hx_split)} of {len(hx_owner_keys(paths))} items "
              f"answered by more than one replica)")
        # With few requests in flight the bound is a slot or two, so bursts spill: the price
        # of the bound, printed, not asserted (it depends on timing).
        few_split, few_hit = affinity(threads=4, seed=3)
        print(f"HAProxy bounded-load hashing, four clients at once: {len(few_split)} of "
              f"{len(hx_owner_keys(paths))} items answered by more than one replica, "
              f"second-pass hit ratio {few_hit:.3f}")
        h_req, h_fail, h_busy, h_per = hot_load(hx.url, paths, hot, work, args.hot_seconds,
                                                "haproxy")
        check(n_fail == 0 and h_fail == 0,
              f"hot item: no failed requests ({n_fail} of {n_req} via nginx, {h_fail} of "
              f"{h_req} via HAProxy)")
        check(h_busy <= 0.5 and h_busy < n_busy,
              f"hot item: the busiest replica answered {100 * n_busy:.0f}% of the requests "
              f"behind nginx's consistent hash, {100 * h_busy:.0f}% behind HAProxy's bounded "
              f"load (factor 1.25: at most 42% of what is in flight); per replica "
              f"{sorted(h_per.values())}")
        print(json.dumps({"hash_hit_ratio": round(hit, 4), "round_robin_hit_ratio":
                          round(rr_hit, 4), "failover_requests": requests,
                          "failover_failed": failed, "items_per_replica": sorted(share.values()),
                          "hot_busiest_share_nginx": round(n_busy, 3),
                          "hot_busiest_share_haproxy": round(h_busy, 3),
                          "haproxy_hit_ratio": round(hx_hit, 4),
                          "haproxy_hit_ratio_four_clients": round(few_hit, 4)}))
    finally:
        for p in reversed(procs):
            p.stop()
    passed = sum(ok for ok, _ in results)
    if passed == len(results):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs of the replicas and nginx: {work}")
    print(f"scale checks: {passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
