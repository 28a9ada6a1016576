#!/usr/bin/env python3
"""Side-by-side throughput, latency, memory and restart time of simplekv and redis-server.

Starts redis-server 7 (appendonly yes) and simplekv with matched durability on free loopback
ports and temporary directories, runs the same load against each in turn, prints tables with
ratios, and cleans up after itself.

    benches/compare.py                       # SET/GET, -P 1 and 16, 50 clients, everysec + always
    benches/compare.py --fsync everysec --pipeline 16 --requests 1000000
    benches/compare.py --sizes 16,256,4096   # value sizes
    benches/compare.py --binary PATH         # a simplekv binary (default: release build)
    benches/compare.py --memory              # RSS after loading 1M keys (16 B keys, 100 B values)
    benches/compare.py --restart             # simplekv start-up time on 10M keys (cached dataset)
    benches/compare.py --latency             # open-loop latency at 50% of the max rate
    benches/compare.py --all                 # all four sections (~11 min on 2 cores)
    benches/compare.py --no-throughput --memory --memory-keys 1000000,10000000

Durability pairs: simplekv `storage.fsync` always/everysec/never against redis `appendfsync`
always/everysec/no. `always` runs only SET (GET does not touch the disk).

--memory: for each count N, loads keys key:000000000000.. (16 bytes) with 100-byte values into
a fresh server of each kind (fsync everysec; Redis with auto AOF rewrite off, so no fork is
running when memory is read), then reads VmRSS/RssAnon/RssFile from /proc/PID/status, DBSIZE,
simplekv's INFO memory keydir_bytes and Redis's used_memory.

--restart: creates a simplekv data directory with N keys once (kept in
$TMPDIR/simplekv-bench-cache/ for later runs; --clear-cache removes it), primes it with one
untimed start (hint files), then times `simplekv server` from exec until it answers PING,
--restart-runs times after a clean stop (SIGTERM: the start reads the shutdown hints of the
active segments) and --restart-runs times after kill -9 (no shutdown hints: the active
segments are read whole), with a warm page cache. --restart-redis also times Redis loading the same
keys from its AOF (one fresh AOF, built once per run).

--latency: runs benches/src/bin/latency.rs (built on demand) against each server at the same
fixed rate: --latency-fraction of the lower of the two servers' -P 1 maxima (taken from the
throughput table of this run, or measured with a short redis-benchmark probe).
"""
import argparse
import csv
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import statistics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIS_FSYNC = {"always": "always", "everysec": "everysec", "never": "no"}
# --autogroup-nice: weight of the scheduler autogroup of every process this script starts.
AUTOGROUP_NICE = None
# redis-benchmark --threads (1 = its default, one event loop for all clients).
BENCH_THREADS = 1


def prioritize(pid):
    """Gives the session of `pid` (each process here is started in its own session, hence its
    own autogroup) the --autogroup-nice weight. With kernel.sched_autogroup_enabled=1 the CPU
    is shared between sessions first, so a plain nice does not protect a benchmark from another
    session's build; the autogroup weight does. Needs root; best effort."""
    if AUTOGROUP_NICE is None:
        return
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(AUTOGROUP_NICE))
    except OSError as e:
        print(f"  (cannot set autogroup nice of {pid}: {e})", file=sys.stderr)


def run_tool(cmd, timeout):
    """Runs a load generator in its own session (see prioritize); returns (rc, stdout, stderr)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    prioritize(p.pid)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise
    return p.returncode, out, err


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ping(port, proc, timeout=30.0, log=None):
    """Returns once the server answers PING with +PONG (a -LOADING reply is not ready yet).

    The connection is kept open across tries while the server accepts but does not answer
    (simplekv listens before its partitions are open), so the answer comes as soon as it can.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                while time.monotonic() < deadline and proc.poll() is None:
                    s.sendall(b"PING\r\n")
                    s.settimeout(max(0.01, deadline - time.monotonic()))
                    reply = s.recv(64)
                    if reply.startswith(b"+PONG"):
                        return
                    if not reply:
                        break
                    time.sleep(0.005)  # -LOADING: ask again shortly
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"server on port {port} did not answer PING in {timeout:.0f} s{tail(log)}")


def tail(log):
    if log is None:
        return ""
    try:
        log.flush()
        with open(log.name, "rb") as f:
            text = f.read()[-2000:].decode(errors="replace").strip()
        return f"; its log ends:\n{text}" if text else ""
    except OSError:
        return ""


def read_reply(f):
    """One RESP2 reply from a buffered socket file, as Python values (errors as RuntimeError)."""
    line = f.readline()
    if not line:
        raise RuntimeError("connection closed")
    t, rest = line[:1], line[1:-2]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        raise RuntimeError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode(errors="replace")
    if t == b"*":
        return [read_reply(f) for _ in range(int(rest))]
    raise RuntimeError(f"bad reply {line!r}")


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def command(port, *args, timeout=60):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(encode(*args))
        with s.makefile("rb") as f:
            return read_reply(f)


def info_fields(port, section):
    out = {}
    for line in command(port, "INFO", section).splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k] = v
    return out


def load_keys(port, n, vsize, batch=5000, timeout_s=900):
    """SET key:%012d (16 bytes) = vsize bytes for i in 0..n, pipelined `batch` at a time over
    one connection; checks every reply is +OK. Bounded by n and timeout_s."""
    value = b"v" * vsize
    tmpl = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$" + str(vsize).encode() + b"\r\n" + value + b"\r\n"
    deadline = time.monotonic() + timeout_s
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, n, batch):
            if time.monotonic() > deadline:
                raise RuntimeError(f"loading {n} keys took over {timeout_s} s")
            m = min(batch, n - start)
            s.sendall(b"".join([tmpl % i for i in range(start, start + m)]))
            want = 5 * m
            buf = bytearray()
            while len(buf) < want:
                chunk = s.recv(max(65536, want - len(buf)))
                if not chunk:
                    raise RuntimeError("server closed the connection while loading")
                buf += chunk
            if buf != b"+OK\r\n" * m:
                raise RuntimeError(f"unexpected reply while loading: {bytes(buf[:200])!r}")
    return time.monotonic() - t0


class Server:
    """One server process on a free loopback port. `data_dir` (kept on stop) or a temp dir."""

    def __init__(self, kind, fsync, binary, workers, extra=(), data_dir=None, redis_extra=(),
                 ping_timeout=30.0):
        self.kind = kind
        self.port = free_port()
        self.keep_dir = data_dir is not None
        self.dir = data_dir or tempfile.mkdtemp(prefix=f"cmp-{kind}-")
        if kind == "redis":
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--dir", self.dir, "--appendonly", "yes",
                   "--appendfsync", REDIS_FSYNC[fsync], "--save", "",
                   "--protected-mode", "no", "--loglevel", "warning", *redis_extra]
        else:
            cmd = [binary, "server", "--port", str(self.port), "--dir", self.dir,
                   "--fsync", fsync, "--log-level", "warn"]
            if workers:
                cmd += ["--workers", str(workers)]
            for kv in extra:
                cmd += ["--set", kv]
        self.log = tempfile.NamedTemporaryFile(prefix=f"cmp-{kind}-", suffix=".log")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        prioritize(self.proc.pid)
        try:
            wait_ping(self.port, self.proc, ping_timeout, self.log)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.monotonic() - self.started

    def status_kib(self):
        """VmRSS, RssAnon, RssFile of the process in KiB."""
        out = {}
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                        out[k] = int(v.split()[0])
        except OSError:
            pass
        return out

    def rss_kib(self):
        return self.status_kib().get("VmRSS", 0)

    def cmd(self, *args):
        return command(self.port, *args)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.log.close()


def redis_benchmark(port, test, requests, clients, pipeline, size, keyspace):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test,
           "-n", str(requests), "-c", str(clients), "-P", str(pipeline), "-d", str(size),
           "-r", str(keyspace), "--csv"]
    if BENCH_THREADS > 1:
        cmd += ["--threads", str(BENCH_THREADS)]
    _, out, _ = run_tool(cmd, timeout=1800)
    rows = list(csv.reader(io.StringIO(out)))
    for r in rows:
        if r and r[0].upper() == test.upper():
            # test, rps, avg, min, p50, p95, p99, max
            return {"rps": float(r[1]), "p50": float(r[4]), "p99": float(r[6])}
    raise RuntimeError(f"no {test} row in redis-benchmark output:\n{out}")


def machine_line(args):
    kernel = platform.release()
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = open("/proc/loadavg").read().split()[0]
    prio = "" if args.autogroup_nice is None else f"; autogroup nice {args.autogroup_nice}"
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} cores ({cpu}); Linux {kernel}; "
            f"load {load}; {workers_line(args)}{prio}; binary {args.binary}")


def workers_line(args):
    """The simplekv worker counts this run uses (cluster_bench.py passes its own args)."""
    if not hasattr(args, "load_workers"):
        return "simplekv workers as the script sets"
    return (f"simplekv workers={args.load_workers} under load, "
            f"{args.solo_workers or 'cores'} for memory/restart")


def throughput(args):
    rows = []
    for fsync in args.fsync.split(","):
        tests = ["set"] if fsync == "always" else args.tests.split(",")
        for size in [int(s) for s in args.sizes.split(",")]:
            for pipeline in [int(p) for p in args.pipeline.split(",")]:
                for test in tests:
                    runs = {"simplekv": [], "redis": []}
                    for rep in range(args.repeat):
                        # Alternate which server goes first, so a slow drift of the machine
                        # does not always favour the same one.
                        order = ("simplekv", "redis") if rep % 2 == 0 else ("redis", "simplekv")
                        for kind in order:
                            srv = Server(kind, fsync, args.binary, args.load_workers, args.set)
                            try:
                                if test == "get":
                                    # Load the keys first so GETs hit.
                                    redis_benchmark(srv.port, "set", args.keyspace * 2,
                                                    args.clients, 16, size, args.keyspace)
                                runs[kind].append(redis_benchmark(
                                    srv.port, test, args.requests, args.clients, pipeline, size,
                                    args.keyspace))
                            finally:
                                srv.stop()
                    # The run with the median ops/s (its own p50/p99), and the spread.
                    result = {}
                    for kind, rs in runs.items():
                        rs = sorted(rs, key=lambda x: x["rps"])
                        result[kind] = dict(rs[len(rs) // 2], lo=rs[0]["rps"], hi=rs[-1]["rps"])
                    s, r = result["simplekv"], result["redis"]
                    rows.append((test.upper(), fsync, size, pipeline, s, r))
                    print(f"  {test.upper():4} fsync={fsync:8} -d {size:<5} -P {pipeline:<3} "
                          f"simplekv {s['rps']:>10.0f}/s  redis {r['rps']:>10.0f}/s  "
                          f"ratio {s['rps'] / r['rps']:.2f}", file=sys.stderr, flush=True)

    print()
    rep = f"; median of {args.repeat} alternating runs (min-max)" if args.repeat > 1 else ""
    threads = f" --threads {BENCH_THREADS}" if BENCH_THREADS > 1 else ""
    print(f"### Throughput: redis-benchmark -c {args.clients} -n {args.requests} -r {args.keyspace}{threads}{rep}")
    print()
    hdr = f"| test | fsync | value | -P | simplekv ops/s | p50 ms | p99 ms | redis ops/s | p50 ms | p99 ms | ratio |"
    print(hdr)
    print("|" + "---|" * 11)

    def ops(x):
        if args.repeat > 1:
            return f"{x['rps']:.0f} ({x['lo'] / 1000:.0f}k-{x['hi'] / 1000:.0f}k)"
        return f"{x['rps']:.0f}"
    for test, fsync, size, pipeline, s, r in rows:
        print(f"| {test} | {fsync} | {size} B | {pipeline} | {ops(s)} | {s['p50']:.3f} | {s['p99']:.3f} | "
              f"{ops(r)} | {r['p50']:.3f} | {r['p99']:.3f} | **{s['rps'] / r['rps']:.2f}x** |")
    print(flush=True)
    return rows


def mib(kib):
    return kib / 1024


def memory(args):
    rows = []
    for n in [int(x) for x in args.memory_keys.split(",")]:
        res = {}
        for kind in ("simplekv", "redis"):
            srv = Server(kind, "everysec", args.binary, args.solo_workers, args.set,
                         redis_extra=("--auto-aof-rewrite-percentage", "0"))
            try:
                took = load_keys(srv.port, n, args.memory_value)
                time.sleep(1.0)  # let background work (hint files, AOF flush) settle
                keys = srv.cmd("DBSIZE")
                if keys != n:
                    raise RuntimeError(f"{kind}: DBSIZE {keys} after loading {n} keys")
                st = srv.status_kib()
                mem = info_fields(srv.port, "memory")
                res[kind] = {"status": st, "mem": mem, "load_s": took}
            finally:
                srv.stop()
            print(f"  memory {kind:8} {n:>9} keys: RSS {mib(st.get('VmRSS', 0)):.1f} MiB, "
                  f"loaded in {took:.1f} s", file=sys.stderr, flush=True)
        rows.append((n, res))
    print()
    print(f"### Memory: N keys of 16 bytes with {args.memory_value}-byte values "
          f"(fsync everysec), RSS after loading")
    print()
    print("| keys | simplekv RSS MiB (anon + file) | keydir MiB | keydir B/key | "
          "redis RSS MiB | redis used_memory MiB | RSS simplekv / redis | load s simplekv / redis |")
    print("|" + "---|" * 8)
    for n, res in rows:
        s, r = res["simplekv"], res["redis"]
        ss, rs = s["status"], r["status"]
        kd = int(s["mem"].get("keydir_bytes", 0))
        print(f"| {n:,} | {mib(ss['VmRSS']):.1f} ({mib(ss.get('RssAnon', 0)):.1f} + "
              f"{mib(ss.get('RssFile', 0)):.1f}) | {kd / 2**20:.1f} | {kd / n:.1f} | "
              f"{mib(rs['VmRSS']):.1f} | {int(r['mem'].get('used_memory', 0)) / 2**20:.1f} | "
              f"**{ss['VmRSS'] / rs['VmRSS']:.2f}x** | {s['load_s']:.1f} / {r['load_s']:.1f} |")
    print(flush=True)
    return rows


def cache_root(args):
    return args.cache_dir or os.path.join(tempfile.gettempdir(), "simplekv-bench-cache")


def restart_dataset(args, n):
    """A simplekv data directory with n keys, created once and kept under cache_root()."""
    tag = hashlib.sha1(json.dumps([n, args.memory_value, args.set]).encode()).hexdigest()[:8]
    d = os.path.join(cache_root(args), f"simplekv-{n}-keys-{tag}")
    marker = os.path.join(d, ".complete")
    if os.path.exists(marker):
        return d, False
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    print(f"  restart: creating {d} with {n:,} keys (once; kept for later runs)",
          file=sys.stderr, flush=True)
    srv = Server("simplekv", "everysec", args.binary, args.solo_workers, args.set, data_dir=d)
    try:
        took = load_keys(srv.port, n, args.memory_value)
        keys = srv.cmd("DBSIZE")
        if keys != n:
            raise RuntimeError(f"DBSIZE {keys} after loading {n} keys")
    except BaseException:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)
        raise
    srv.stop()
    if srv.proc.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        raise RuntimeError(f"simplekv exited with {srv.proc.returncode} after loading")
    print(f"  restart: loaded in {took:.1f} s", file=sys.stderr, flush=True)
    with open(marker, "w") as f:
        f.write(f"{n}\n")
    return d, True


def du_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def restart(args):
    n = args.restart_keys
    d, created = restart_dataset(args, n)
    # One untimed start: writes any hint files still missing, so every timed run sees the same
    # directory; it also checks the dataset is whole.
    srv = Server("simplekv", "everysec", args.binary, args.solo_workers, args.set, data_dir=d,
                 ping_timeout=600)
    try:
        keys = srv.cmd("DBSIZE")
        time.sleep(2.0)
    finally:
        srv.stop()
    if keys != n:
        shutil.rmtree(d, ignore_errors=True)
        raise RuntimeError(f"cached dataset {d} has {keys} keys, not {n}: removed, run again")
    def start():
        return Server("simplekv", "everysec", args.binary, args.solo_workers, args.set, data_dir=d,
                      ping_timeout=600)

    def kill9(srv):
        srv.proc.kill()
        srv.proc.wait()
        srv.stop()

    # After a clean stop (SIGTERM) the start reads each active segment's shutdown hint; after
    # kill -9 it has none and reads the active segments whole: both are timed.
    times = []
    for i in range(args.restart_runs):
        srv = start()
        times.append(srv.ready_s)
        rss = srv.rss_kib()
        srv.stop()
        print(f"  restart {i + 1} (after a clean stop): PING answered {srv.ready_s:.3f} s after exec, "
              f"RSS {mib(rss):.0f} MiB", file=sys.stderr, flush=True)
    crash_times = []
    kill9(start())
    for i in range(args.restart_runs):
        srv = start()
        crash_times.append(srv.ready_s)
        kill9(srv)
        print(f"  restart {i + 1} (after kill -9): PING answered {srv.ready_s:.3f} s after exec",
              file=sys.stderr, flush=True)
    # Leaves the dataset as a clean stop does, for the next run.
    start().stop()
    redis_times = []
    if args.restart_redis:
        rsrv = Server("redis", "everysec", args.binary, args.solo_workers,
                      redis_extra=("--auto-aof-rewrite-percentage", "0"))
        rdir = rsrv.dir
        rsrv.keep_dir = True
        try:
            load_keys(rsrv.port, n, args.memory_value)
        finally:
            rsrv.stop()
        try:
            for i in range(args.restart_runs):
                rsrv = Server("redis", "everysec", args.binary, args.solo_workers, data_dir=rdir,
                              redis_extra=("--auto-aof-rewrite-percentage", "0"), ping_timeout=600)
                redis_times.append(rsrv.ready_s)
                rsrv.stop()
                print(f"  redis restart {i + 1}: PING answered {rsrv.ready_s:.3f} s after exec",
                      file=sys.stderr, flush=True)
        finally:
            shutil.rmtree(rdir, ignore_errors=True)
    print()
    print(f"### Restart: exec of `simplekv server` to first PONG, {n:,} keys "
          f"({du_bytes(d) / 2**20:.0f} MiB on disk), warm page cache")
    print()
    print("| server | keys | runs | min s | median s | max s |")
    print("|---|---|---|---|---|---|")
    workers = args.solo_workers or 'cores'
    for what, ts in (("after a clean stop", times), ("after kill -9", crash_times)):
        print(f"| simplekv (workers={workers}), {what} | {n:,} | {len(ts)} | {min(ts):.3f} | "
              f"{statistics.median(ts):.3f} | {max(ts):.3f} |")
    if redis_times:
        print(f"| redis (AOF) | {n:,} | {len(redis_times)} | {min(redis_times):.3f} | "
              f"{statistics.median(redis_times):.3f} | {max(redis_times):.3f} |")
    print(flush=True)
    return times


def latency_binary(args):
    if args.latency_binary:
        return args.latency_binary
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/simplekv-target"))
    path = os.path.join(target, "release", "latency")
    print("  latency: cargo build --release -p simplekv-benches --bin latency", file=sys.stderr,
          flush=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "simplekv-benches", "--bin",
                    "latency"], cwd=ROOT, check=True, env=dict(os.environ, CARGO_TARGET_DIR=target),
                   timeout=1800)
    return path


def latency(args, through_rows):
    binary = latency_binary(args)
    fsync = args.latency_fsync
    size = int(args.sizes.split(",")[0])
    rows = []
    for test in args.tests.split(","):
        # The -P 1 maxima: from this run's table, else a short redis-benchmark probe.
        maxima = {}
        for t, f, sz, p, s, r in through_rows:
            if t == test.upper() and f == fsync and sz == size and p == 1:
                maxima = {"simplekv": s["rps"], "redis": r["rps"]}
        if args.latency_rate:
            rate = args.latency_rate
        else:
            if not maxima:
                for kind in ("simplekv", "redis"):
                    srv = Server(kind, fsync, args.binary, args.load_workers, args.set)
                    try:
                        if test == "get":
                            load_keys(srv.port, args.keyspace, size)
                        maxima[kind] = redis_benchmark(srv.port, test, 200_000, args.clients, 1,
                                                       size, args.keyspace)["rps"]
                    finally:
                        srv.stop()
            rate = args.latency_fraction * min(maxima.values())
        for kind in ("simplekv", "redis"):
            srv = Server(kind, fsync, args.binary, args.load_workers, args.set)
            try:
                cmd = [binary, "--port", str(srv.port), "--rate", f"{rate:.0f}",
                       "--connections", str(args.latency_connections),
                       "--duration", str(args.latency_duration), "--warmup", "2",
                       "--test", test, "--size", str(size), "--keyspace", str(args.keyspace),
                       "--label", kind, "--json"]
                if test == "get":
                    cmd += ["--load", str(args.keyspace)]
                _, out, err = run_tool(cmd, timeout=args.latency_duration + 120)
                line = [l for l in out.splitlines() if l.startswith("{")]
                if not line:
                    raise RuntimeError(f"latency tool failed: {err}")
                res = json.loads(line[-1])
            finally:
                srv.stop()
            rows.append((test.upper(), kind, maxima.get(kind), res))
            print(f"  latency {test.upper()} {kind:8} at {rate:.0f}/s: p50 {res['p50_us']:.0f} µs "
                  f"p99 {res['p99_us']:.0f} µs p99.9 {res['p999_us']:.0f} µs max {res['max_us']:.0f} µs",
                  file=sys.stderr, flush=True)
    print()
    print(f"### Latency: open loop, fixed rate = {args.latency_fraction:.0%} of the lower -P 1 maximum, "
          f"{args.latency_connections} connections, {args.latency_duration} s (+2 s warm-up), "
          f"fsync {fsync}, -d {size}; µs from intended send time")
    print()
    print("| test | server | rate/s | p50 | p90 | p99 | p99.9 | max | service p99 | sender late p99 | missing |")
    print("|" + "---|" * 11)
    for test, kind, mx, r in rows:
        print(f"| {test} | {kind} | {r['rate']:.0f} | {r['p50_us']:.0f} | {r['p90_us']:.0f} | "
              f"{r['p99_us']:.0f} | {r['p999_us']:.0f} | {r['max_us']:.0f} | {r['service_p99_us']:.0f} | "
              f"{r['late_p99_us']:.0f} | {r['missing']} |")
    print(flush=True)
    return rows


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
    ap.add_argument("--bench-threads", type=int, default=1,
                    help="redis-benchmark --threads: with 1 (its default) one thread drives all "
                         "clients and is what limits both servers at -P 1 on a small machine")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each throughput row N times, alternating the servers' order; "
                         "report the median (for noisy machines)")
    ap.add_argument("--workers", type=int, default=None,
                    help="simplekv workers for every run (0 = one per core, the server's default). "
                         "Default: cores - 1 (at least 1) for the throughput and latency runs, "
                         "whose load generator runs on this machine too and needs a core, as "
                         "redis-server's one main thread leaves it one; one per core for "
                         "--memory and --restart, where nothing else runs")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="extra simplekv setting, repeatable (e.g. storage.partitions=4)")
    ap.add_argument("--no-throughput", action="store_true", help="skip the redis-benchmark table")
    ap.add_argument("--all", action="store_true", help="throughput, --memory, --restart, --latency")
    ap.add_argument("--memory", action="store_true", help="RSS after loading --memory-keys keys")
    ap.add_argument("--memory-keys", default="1000000", help="comma-separated key counts")
    ap.add_argument("--memory-value", type=int, default=100, help="value bytes for --memory/--restart")
    ap.add_argument("--restart", action="store_true", help="simplekv start-up time on --restart-keys keys")
    ap.add_argument("--restart-keys", type=int, default=10_000_000)
    ap.add_argument("--restart-runs", type=int, default=3)
    ap.add_argument("--restart-redis", action="store_true", help="also time Redis loading its AOF")
    ap.add_argument("--cache-dir", help="where --restart keeps its dataset "
                    "(default $TMPDIR/simplekv-bench-cache)")
    ap.add_argument("--clear-cache", action="store_true", help="remove the --restart dataset cache and exit")
    ap.add_argument("--latency", action="store_true", help="open-loop fixed-rate latency")
    ap.add_argument("--latency-fraction", type=float, default=0.5)
    ap.add_argument("--latency-rate", type=float, help="fixed rate instead of a fraction of the max")
    ap.add_argument("--latency-duration", type=int, default=20)
    ap.add_argument("--latency-connections", type=int, default=16)
    ap.add_argument("--latency-fsync", default="everysec")
    ap.add_argument("--latency-binary", help="benches latency tool (default: build it)")
    ap.add_argument("--autogroup-nice", type=int, metavar="N",
                    help="root only: set the scheduler autogroup nice (-20..19) of every server and "
                         "load generator started, e.g. -10 on a machine shared with other sessions")
    args = ap.parse_args()
    if args.workers is None:
        args.load_workers = max(1, (os.cpu_count() or 2) - 1)
        args.solo_workers = 0
    else:
        args.load_workers = args.solo_workers = args.workers
    global AUTOGROUP_NICE, BENCH_THREADS
    AUTOGROUP_NICE = args.autogroup_nice
    if not 1 <= args.bench_threads <= 64:
        sys.exit("--bench-threads must be 1..64")
    BENCH_THREADS = args.bench_threads
    if args.clear_cache:
        shutil.rmtree(cache_root(args), ignore_errors=True)
        print(f"removed {cache_root(args)}")
        return
    if args.all:
        args.memory = args.restart = args.latency = True
    if not os.path.exists(args.binary):
        sys.exit(f"no simplekv binary at {args.binary}: cargo build --release -p simplekv-cli")
    for tool in ("redis-server", "redis-benchmark"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: run scripts/setup.sh")
    if not 1 <= args.latency_duration <= 600 or not 1 <= args.restart_runs <= 20 \
            or not 1 <= args.repeat <= 15:
        sys.exit("--latency-duration must be 1..600, --restart-runs 1..20, --repeat 1..15")

    t0 = time.monotonic()
    print(f"# compare.py: {machine_line(args)}")
    print()
    rows = [] if args.no_throughput else throughput(args)
    if args.memory:
        memory(args)
    if args.restart:
        restart(args)
    if args.latency:
        latency(args, rows)
    print(f"(total {time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
