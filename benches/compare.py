#!/usr/bin/env python3
"""Side-by-side throughput and latency of simplekv and redis-server, in one run, as ratios.

Starts redis-server 7 (appendonly yes) and simplekv with matched durability on free loopback
ports and temporary directories, runs redis-benchmark against each in turn with the same
arguments, prints one table, and cleans up after itself.

    benches/compare.py                       # SET/GET, -P 1 and 16, 50 clients, everysec + always
    benches/compare.py --fsync everysec --pipeline 16 --requests 1000000
    benches/compare.py --sizes 16,256,4096   # value sizes
    benches/compare.py --binary PATH         # a simplekv binary (default: release build)

Durability pairs: simplekv `storage.fsync` always/everysec/never against redis `appendfsync`
always/everysec/no. `always` runs only SET (GET does not touch the disk).
"""
import argparse
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIS_FSYNC = {"always": "always", "everysec": "everysec", "never": "no"}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ping(port, proc, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not answer PING")


class Server:
    def __init__(self, kind, fsync, binary, workers, extra=()):
        self.kind = kind
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix=f"cmp-{kind}-")
        if kind == "redis":
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--dir", self.dir, "--appendonly", "yes",
                   "--appendfsync", REDIS_FSYNC[fsync], "--save", "",
                   "--protected-mode", "no", "--loglevel", "warning"]
        else:
            cmd = [binary, "server", "--port", str(self.port), "--dir", self.dir,
                   "--fsync", fsync, "--log-level", "warn"]
            if workers:
                cmd += ["--workers", str(workers)]
            for kv in extra:
                cmd += ["--set", kv]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        wait_ping(self.port, self.proc)

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_benchmark(port, test, requests, clients, pipeline, size, keyspace):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test,
           "-n", str(requests), "-c", str(clients), "-P", str(pipeline), "-d", str(size),
           "-r", str(keyspace), "--csv"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800).stdout
    rows = list(csv.reader(io.StringIO(out)))
    for r in rows:
        if r and r[0].upper() == test.upper():
            # test, rps, avg, min, p50, p95, p99, max
            return {"rps": float(r[1]), "p50": float(r[4]), "p99": float(r[6])}
    raise RuntimeError(f"no {test} row in redis-benchmark output:\n{out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/simplekv-target")),
        "release", "simplekv"))
    ap.add_argument("--fsync", default="everysec,always")
    ap.add_argument("--pipeline", default="1,16")
    ap.add_argument("--tests", default="set,get")
    ap.add_argument("--sizes", default="3", help="value sizes in bytes (redis-benchmark -d)")
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--keyspace", type=int, default=100_000, help="redis-benchmark -r")
    ap.add_argument("--workers", type=int, default=0, help="simplekv workers (0 = one per core)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="extra simplekv setting, repeatable (e.g. storage.partitions=4)")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"no simplekv binary at {args.binary}: cargo build --release -p simplekv-cli")
    for tool in ("redis-server", "redis-benchmark"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: run scripts/setup.sh")

    rows = []
    for fsync in args.fsync.split(","):
        tests = ["set"] if fsync == "always" else args.tests.split(",")
        for size in [int(s) for s in args.sizes.split(",")]:
            for pipeline in [int(p) for p in args.pipeline.split(",")]:
                for test in tests:
                    result = {}
                    for kind in ("simplekv", "redis"):
                        srv = Server(kind, fsync, args.binary, args.workers, args.set)
                        try:
                            if test == "get":
                                # Load the keys first so GETs hit.
                                redis_benchmark(srv.port, "set", args.keyspace * 2, args.clients,
                                                16, size, args.keyspace)
                            result[kind] = redis_benchmark(srv.port, test, args.requests,
                                                           args.clients, pipeline, size,
                                                           args.keyspace)
                        finally:
                            srv.stop()
                    s, r = result["simplekv"], result["redis"]
                    rows.append((test.upper(), fsync, size, pipeline, s, r))
                    print(f"  {test.upper():4} fsync={fsync:8} -d {size:<5} -P {pipeline:<3} "
                          f"simplekv {s['rps']:>10.0f}/s  redis {r['rps']:>10.0f}/s  "
                          f"ratio {s['rps'] / r['rps']:.2f}", file=sys.stderr, flush=True)

    print()
    print(f"redis-benchmark -c {args.clients} -n {args.requests} -r {args.keyspace}; "
          f"{os.cpu_count()} cores; simplekv workers={args.workers or 'cores'}")
    hdr = f"| test | fsync | value | -P | simplekv ops/s | p50 ms | p99 ms | redis ops/s | p50 ms | p99 ms | ratio |"
    print(hdr)
    print("|" + "---|" * 11)
    for test, fsync, size, pipeline, s, r in rows:
        print(f"| {test} | {fsync} | {size} B | {pipeline} | {s['rps']:.0f} | {s['p50']:.3f} | {s['p99']:.3f} | "
              f"{r['rps']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | **{s['rps'] / r['rps']:.2f}x** |")


if __name__ == "__main__":
    main()
