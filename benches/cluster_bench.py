#!/usr/bin/env python3
"""Cluster benchmark: throughput of a 3-node cluster against one standalone node, failover
time after kill -9 of a partition leader, and catch-up time of a restarted follower.

    benches/cluster_bench.py                      # all three sections (~2-3 min on 2 cores)
    benches/cluster_bench.py --requests 300000    # shorter throughput runs
    benches/cluster_bench.py --kills 5            # more failover samples
    benches/cluster_bench.py --no-throughput --no-catchup   # failover only
    benches/cluster_bench.py --keep               # keep the data dirs and node logs (printed)

Everything runs on 127.0.0.1, on free ports, in a temporary directory that is removed at the
end (also on failure or Ctrl-C, unless --keep). The binary is $CARGO_TARGET_DIR/release/simplekv
(default target dir ~/.cache/simplekv-target), built with `cargo build --release -p
simplekv-cli` when missing; --binary PATH uses another one. Needs redis-benchmark (7.x) and
ZooKeeper + java (scripts/setup.sh installs both).

1. Throughput: `simplekv server --workers 1 --no-pin --fsync everysec`, stopped, then
   `simplekv cluster local --nodes 3 --partitions 16 --workers 1 --fsync everysec`
   (replication factor 3, acks=all, min_insync_replicas=2: the defaults). The same
   `redis-benchmark -t set -c 50 -n N -d 16 -P 1|16 --csv` runs against both; against the
   cluster with `--cluster` (redis-benchmark reads CLUSTER NODES, gives each client one node,
   writes one slot per node, i.e. 3 of the 16 partitions, and follows MOVED). On a 2-core
   machine the 3 nodes, ZooKeeper and redis-benchmark share the same 2 cores, while the
   standalone node shares them only with redis-benchmark: the ratio measures replication
   cost *and* 3x the processes per core.
2. Failover: python writers (RESP over sockets, following -MOVED, retrying -TRYAGAIN and
   -CLUSTERDOWN) keep writing keys of every partition; a probe writes one key of partition 0
   back to back. The leader of partition 0 (from `simplekv cluster status`) is killed with
   SIGKILL; failover time = from the kill to the acknowledgement (+OK, acks=all) of the
   probe's first write sent after the kill. The node is then started again with its own
   command line (read from /proc/PID/cmdline before the kill, the one `cluster local` used)
   and the next kill waits until every ISR is full again and every partition is led by its
   preferred replica (`simplekv cluster rebalance`). --kills rounds (default 3).
3. Catch-up: kill -9 one node (node 3, --catchup-node; with RF 3 on 3 nodes every node leads
   some partitions, so its partitions fail over first and it is a follower of all 16 when it
   comes back), wait until every partition has a live leader, write --catchup-records records
   (`redis-benchmark --cluster -t set -r N -n N -P 64 -d 16`), start the node again with its own
   command line and time until it is back in the ISR of every partition (polling
   `simplekv cluster status` every 0.1 s).
"""
import argparse
import calendar
import collections
import ctypes
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (helpers: run_tool, free_port, wait_ping, encode, machine info)

ROOT = compare.ROOT
SLOTS = 16384
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/simplekv-target"))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Slots (the same rule as net/src/slot.rs and router.rs)

def _crc16_table():
    t = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        t.append(crc & 0xFFFF)
    return t


CRC16 = _crc16_table()


def key_slot(key):
    k = key if isinstance(key, bytes) else key.encode()
    o = k.find(b"{")
    if o >= 0:
        c = k.find(b"}", o + 1)
        if c > o + 1:
            k = k[o + 1:c]
    crc = 0
    for b in k:
        crc = ((crc << 8) & 0xFFFF) ^ CRC16[((crc >> 8) ^ b) & 0xFF]
    return crc & (SLOTS - 1)


def partition_of(key, partitions):
    return key_slot(key) * partitions // SLOTS


def key_in_partition(prefix, p, partitions):
    i = 0
    while True:
        k = f"{prefix}:{i}"
        if partition_of(k, partitions) == p:
            return k
        i += 1


# ---------------------------------------------------------------------------------------------
# Processes: everything started here is tracked and stopped in cleanup()

PROCS = []  # (Popen, label) of processes started directly by this script
_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup():
    # Ask the kernel to SIGTERM the child if this script dies without cleaning up
    # (PR_SET_PDEATHSIG = 1). Children are only started from the main thread.
    _libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def spawn(cmd, label, logfile, cwd=None):
    out = open(logfile, "ab")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True, preexec_fn=_child_setup, cwd=cwd)
    out.close()
    compare.prioritize(p.pid)
    PROCS.append((p, label))
    return p


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode() for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def cpu_seconds(pids):
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tck
        except (OSError, IndexError, ValueError):
            pass
    return total


def stop_proc(p, label, timeout=30):
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"{label} (pid {p.pid}) did not stop in {timeout} s: SIGKILL")
        p.kill()
        p.wait()


def du_bytes(path):
    return compare.du_bytes(path)


# ---------------------------------------------------------------------------------------------
# redis-benchmark

def redis_benchmark(port, pipeline, requests, clients, size, cluster=False, keyspace=0,
                    timeout=1200):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set",
           "-n", str(requests), "-c", str(clients), "-P", str(pipeline), "-d", str(size), "--csv"]
    if keyspace:
        cmd += ["-r", str(keyspace)]
    if cluster:
        cmd.append("--cluster")
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    rc, out, err = compare.run_tool(cmd, timeout=timeout)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = None
    other = []
    for line in out.splitlines():
        f = [x.strip('"') for x in line.split(",")]
        if f and f[0] == "SET" and len(f) >= 8:
            row = {"rps": float(f[1]), "avg": float(f[2]), "p50": float(f[4]),
                   "p95": float(f[5]), "p99": float(f[6]), "max": float(f[7])}
        elif line.strip() and not line.startswith('"test"') and not line.startswith("Cluster has") \
                and not line.startswith("Master "):
            other.append(line.strip())
    other += [l.strip() for l in err.splitlines() if l.strip()]
    counts = collections.Counter(other)
    other = [m if counts[m] == 1 else f"{m} (x{counts[m]})" for m in dict.fromkeys(other)]
    if row is None or rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {rc}):\n{out[-3000:]}\n{err[-3000:]}")
    row.update(wall=wall, bench_cpu=(r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
               messages=other, cmd=" ".join(cmd))
    return row


# ---------------------------------------------------------------------------------------------
# The local cluster

class LocalCluster:
    """`simplekv cluster local` in DIR, plus the nodes this script restarts itself."""

    SUMMARY_NODE = re.compile(r"^\s+(\d+)\s+127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:(\d+)\s+(\d+)\s+(\S+)\s*$")

    def __init__(self, binary, d, nodes, partitions, workers, fsync, extra):
        self.binary, self.dir, self.partitions = binary, d, partitions
        self.base = pick_base_port(nodes)
        self.out = os.path.join(d, "cluster-local.out")
        os.makedirs(d, exist_ok=True)
        cmd = [binary, "cluster", "local", "--nodes", str(nodes), "--base-port", str(self.base),
               "--dir", d, "--partitions", str(partitions), "--workers", str(workers),
               "--fsync", fsync]
        for kv in extra:
            cmd += ["--set", kv]
        self.cmd = cmd
        log(" ".join(cmd))
        self.proc = spawn(cmd, "cluster local", self.out, cwd=d)
        self.nodes = {}  # id -> {"port", "pid", "log", "argv", "proc" (when restarted here)}
        self.zk_pid = None
        self.zk = None
        deadline = time.monotonic() + 120
        text = ""
        while time.monotonic() < deadline:
            with open(self.out, errors="replace") as f:
                text = f.read()
            if "Ctrl-C stops the cluster." in text:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"cluster local exited with {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"cluster local did not come up in 120 s:\n{text[-3000:]}")
        for line in text.splitlines():
            m = self.SUMMARY_NODE.match(line)
            if m:
                nid, port, _grpc, pid, nlog = m.groups()
                self.nodes[int(nid)] = {"port": int(port), "pid": int(pid), "log": nlog,
                                        "argv": cmdline(int(pid)), "proc": None}
            m = re.match(r"^ZooKeeper: (\S+) \(pid (\d+)", line)
            if m:
                self.zk_pid = int(m.group(2))
            m = re.match(r"^status:\s+simplekv cluster status --zk (\S+)", line)
            if m:
                self.zk = m.group(1)
        if len(self.nodes) != nodes or not self.zk:
            raise RuntimeError(f"cannot parse the output of cluster local:\n{text}")
        for nid, n in self.nodes.items():
            if not n["argv"] or n["argv"][1:2] != ["server"]:
                raise RuntimeError(f"node {nid} (pid {n['pid']}): unexpected command line {n['argv']}")
        log(f"cluster up: nodes {sorted(self.nodes)} on ports "
            f"{[n['port'] for n in self.nodes.values()]}, --zk {self.zk}")

    def ports(self):
        return [n["port"] for _, n in sorted(self.nodes.items())]

    def pids(self):
        return [n["pid"] for n in self.nodes.values() if n["pid"]]

    def status_text(self):
        p = subprocess.run([self.binary, "cluster", "status", "--zk", self.zk],
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"cluster status failed: {p.stderr.strip()}")
        return p.stdout

    def status(self):
        return parse_status(self.status_text())

    def wait(self, pred, what, timeout, interval=0.2):
        """Polls status until pred(status) is true; returns (status, seconds waited)."""
        t0 = time.monotonic()
        last_err = None
        st = None
        while time.monotonic() - t0 < timeout:
            try:
                st = self.status()
                if pred(st):
                    return st, time.monotonic() - t0
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                last_err = e
            self.check_alive()
            time.sleep(interval)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}; last status:\n"
                           f"{self.status_text() if st else last_err}")

    def full(self, st, without=None):
        """Every partition has a live leader and an ISR of every live replica."""
        parts = st["parts"]
        if len(parts) != self.partitions:
            return False
        for p in parts.values():
            want = set(p["replicas"]) - ({without} if without else set())
            if p["leader"] is None or p["leader"] == without or set(p["isr"]) != want:
                return False
        return True

    def check_alive(self):
        """Raises if a node exited that this script did not kill."""
        for nid, n in self.nodes.items():
            if n["pid"] and not pid_alive(n["pid"]):
                raise RuntimeError(f"node {nid} (pid {n['pid']}) died unexpectedly; "
                                   f"its log ends:\n{tail_file(n['log'], 3000)}")
            if n["proc"] is not None and n["proc"].poll() is not None:
                raise RuntimeError(f"node {nid} exited with {n['proc'].returncode}; "
                                   f"its log ends:\n{tail_file(n['log'], 3000)}")

    def kill(self, nid):
        n = self.nodes[nid]
        pid = n["pid"]
        t = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        n["pid"] = None
        if n["proc"] is not None:
            n["proc"].wait()
        else:
            # A child of cluster local, which reaps it; wait until it is gone.
            deadline = time.monotonic() + 10
            while pid_alive(pid) and cmdline(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        return t

    def restart(self, nid):
        """Starts node nid again with the command line cluster local gave it."""
        n = self.nodes[nid]
        t = time.monotonic()
        p = spawn(n["argv"], f"node {nid}", n["log"], cwd=self.dir)
        n["proc"], n["pid"] = p, p.pid
        return t

    def rebalance(self, timeout=60):
        """Asks for a preferred-leader election and waits until every partition is led by its
        preferred replica with a full ISR, so no leader moves during a measurement."""
        subprocess.run([self.binary, "cluster", "rebalance", "--zk", self.zk],
                       capture_output=True, text=True, timeout=30, check=True)
        return self.wait(lambda s: self.full(s) and all(
            x["leader"] == x["replicas"][0] for x in s["parts"].values()),
            "every partition led by its preferred replica", timeout)

    def log_marks(self):
        marks = {}
        for nid, n in self.nodes.items():
            try:
                marks[nid] = os.path.getsize(n["log"])
            except OSError:
                marks[nid] = 0
        return marks

    def logs_since(self, marks):
        """(node id, text each node logged since `marks`)."""
        for nid, n in self.nodes.items():
            try:
                with open(n["log"], "rb") as f:
                    f.seek(marks.get(nid, 0))
                    yield nid, f.read().decode(errors="replace")
            except OSError:
                continue

    def log_events(self, marks):
        """ISR shrinks and ERROR/panic lines in the node logs since `marks`."""
        ev = collections.Counter()
        samples = []
        for nid, text in self.logs_since(marks):
            for l in text.splitlines():
                if "shrinking the ISR" in l:
                    ev["isr_shrinks"] += 1
                    m = re.search(r"partition (\d+):", l)
                    if m:
                        ev[f"shrink_p{m.group(1)}"] += 1
                    if re.search(r"shrinking the ISR to \[\d+\]\s*$", l):
                        ev["isr_leader_alone"] += 1
                    if len(samples) < 3:
                        samples.append(f"node {nid}: {l.strip()[:200]}")
                elif re.search(r" ERROR |panicked", l):
                    ev["errors"] += 1
                    if len(samples) < 6:
                        samples.append(f"node {nid}: {l.strip()[:300]}")
        return ev, samples

    def first_log_time(self, marks, pattern):
        """Wall-clock time (epoch seconds) of the first log line since `marks` matching
        `pattern`, over all nodes; None if there is none."""
        best = None
        for _, text in self.logs_since(marks):
            for l in text.splitlines():
                if re.search(pattern, l):
                    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d+)Z", l)
                    if m:
                        t = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) \
                            + float("0." + m.group(2))
                        best = t if best is None else min(best, t)
                    break
        return best

    def stop(self):
        # First the nodes this script started (cluster local does not know them), then
        # cluster local, which stops its own nodes and ZooKeeper.
        for nid, n in self.nodes.items():
            if n["proc"] is not None:
                stop_proc(n["proc"], f"node {nid}")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                log("cluster local did not stop in 90 s: SIGKILL")
                self.proc.kill()
                self.proc.wait()
        # Leftovers (cluster local killed): only processes whose command line names our dir.
        for pid in [n["pid"] for n in self.nodes.values()] + [self.zk_pid]:
            if pid and pid_alive(pid) and any(self.dir in a for a in cmdline(pid)):
                log(f"killing leftover pid {pid}")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def pick_base_port(nodes):
    for _ in range(200):
        base = random.randrange(20000, 60000 - 200)
        ports = [base + i for i in range(1, nodes + 1)] + [base + 100 + i for i in range(1, nodes + 1)]
        ok = True
        for port in ports:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            return base
    raise RuntimeError("no free range of ports")


def parse_status(text):
    """`simplekv cluster status` -> {"nodes": set, "controller": id, "parts": {p: {...}}}."""
    nodes, parts = set(), {}
    section, isr_col = None, None
    controller = None
    m = re.search(r"controller: node (\d+)", text)
    if m:
        controller = int(m.group(1))
    for line in text.splitlines():
        if line.startswith("nodes:"):
            section = "nodes"
            continue
        if line.startswith("partitions:"):
            section = "parts"
            continue
        f = line.split()
        if not f:
            continue
        if section == "nodes" and f[0].isdigit():
            nodes.add(int(f[0]))
        elif section == "parts":
            if f[0] == "part":
                isr_col = re.search(r"\bisr\b", line).start()
                continue
            if not f[0].isdigit() or isr_col is None:
                continue
            isr_txt = line[isr_col:].split()[0] if line[isr_col:isr_col + 1].strip() else ""
            ends = {}
            for tok in f:
                m = re.match(r"^(\d+):(\d+)/(\d+)$", tok)
                if m:
                    ends[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
            parts[int(f[0])] = {
                "leader": int(f[2]) if f[2].isdigit() else None,
                "epoch": int(f[3]),
                "replicas": [int(x) for x in f[4].split(",")],
                "isr": [int(x) for x in isr_txt.split(",")] if isr_txt else [],
                "ends": ends,
            }
    return {"nodes": nodes, "controller": controller, "parts": parts}


def expected_records(requests, pipeline):
    """redis-benchmark sends whole pipelines: the last one may overshoot -n."""
    return -(-requests // pipeline) * pipeline


def leader_ends(st):
    """Sum over partitions of the leader's log end (None when status does not show it)."""
    total = 0
    for x in st["parts"].values():
        e = x["ends"].get(x["leader"])
        if e is None:
            return None
        total += e[0]
    return total


def tail_file(path, n):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode(errors="replace")
    except OSError as e:
        return f"({e})"


# ---------------------------------------------------------------------------------------------
# A small cluster client for the failover writers

class ClusterWriter:
    """SET over RESP to whichever node leads the key's slot: follows -MOVED, retries -TRYAGAIN
    and -CLUSTERDOWN after 10 ms, moves to another node on a connection error. Other error
    replies are counted (and retried): they are anomalies."""

    def __init__(self, ports, timeout=6.0):
        self.ports = list(ports)
        self.timeout = timeout
        self.route = {}  # slot -> port
        self.conns = {}
        self.stats = collections.Counter()
        self.errors = collections.Counter()
        self.next = random.randrange(len(self.ports))

    def _conn(self, port):
        c = self.conns.get(port)
        if c is None:
            s = socket.create_connection(("127.0.0.1", port), timeout=self.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = (s, s.makefile("rb"))
            self.conns[port] = c
        return c

    def _drop(self, port):
        c = self.conns.pop(port, None)
        if c:
            try:
                c[1].close()
                c[0].close()
            except OSError:
                pass

    def _other_port(self, port):
        self.next = (self.next + 1) % len(self.ports)
        p = self.ports[self.next]
        return p if p != port else self.ports[(self.next + 1) % len(self.ports)]

    def set(self, key, value, stop):
        """Returns (send time of the attempt that succeeded, ack time), or None if stopped."""
        slot = key_slot(key)
        port = self.route.get(slot) or self.ports[self.next]
        req = compare.encode("SET", key, value)
        while not stop.is_set():
            t_send = time.monotonic()
            try:
                s, f = self._conn(port)
                s.sendall(req)
                line = f.readline()
                if not line:
                    raise ConnectionError("connection closed")
            except (OSError, ConnectionError) as e:
                self.stats[f"conn:{type(e).__name__}"] += 1
                self._drop(port)
                self.route.pop(slot, None)
                port = self._other_port(port)
                time.sleep(0.01)
                continue
            if line.startswith(b"+OK"):
                self.stats["ok"] += 1
                self.route[slot] = port
                return t_send, time.monotonic()
            msg = line[1:].strip().decode(errors="replace")
            if msg.startswith("MOVED"):
                self.stats["moved"] += 1
                port = int(msg.split()[2].rsplit(":", 1)[1])
                self.route[slot] = port
                continue
            if msg.startswith("TRYAGAIN") or msg.startswith("CLUSTERDOWN"):
                self.stats[msg.split()[0].lower()] += 1
                time.sleep(0.01)
                continue
            self.errors[re.sub(r"\d+", "N", msg)[:160]] += 1
            time.sleep(0.01)
        return None

    def close(self):
        for port in list(self.conns):
            self._drop(port)


class Probe(threading.Thread):
    """Writes `key` back to back; after mark(t) it records the ack of the first write sent at
    or after t."""

    def __init__(self, ports, key, stop):
        super().__init__(daemon=True)
        self.w = ClusterWriter(ports)
        self.key, self.stop = key, stop
        self.lock = threading.Lock()
        self.since = None
        self.first_ack = None
        self.last_ack = 0.0
        self.n = 0

    def mark(self, t):
        with self.lock:
            self.since, self.first_ack = t, None

    def run(self):
        while not self.stop.is_set():
            r = self.w.set(self.key, f"v{self.n}", self.stop)
            if r is None:
                break
            self.n += 1
            t_send, t_ack = r
            with self.lock:
                self.last_ack = t_ack
                if self.since is not None and self.first_ack is None and t_send >= self.since:
                    self.first_ack = t_ack
        self.w.close()


class Loader(threading.Thread):
    """Background load: SETs over keys of every partition, one at a time."""

    def __init__(self, ports, idx, stop):
        super().__init__(daemon=True)
        self.w = ClusterWriter(ports)
        self.idx, self.stop = idx, stop
        self.max_gap = 0.0
        self.gap_since = None

    def run(self):
        i = 0
        last = time.monotonic()
        while not self.stop.is_set():
            r = self.w.set(f"load:{self.idx}:{i % 100000}", "x" * 16, self.stop)
            if r is None:
                break
            i += 1
            if self.gap_since is not None and r[1] - last > self.max_gap:
                self.max_gap = r[1] - last
            last = r[1]
        self.w.close()


# ---------------------------------------------------------------------------------------------
# Sections

def standalone_throughput(args, tmp):
    d = os.path.join(tmp, "standalone")
    port = compare.free_port()
    cmd = [args.binary, "server", "--port", str(port), "--dir", d, "--workers", "1", "--no-pin",
           "--fsync", args.fsync]
    logf = os.path.join(tmp, "standalone.log")
    log(" ".join(cmd))
    p = spawn(cmd, "standalone", logf)
    rows = []
    try:
        with open(logf, "ab") as lf:
            compare.wait_ping(port, p, 30, lf)
        for pl in args.pipelines:
            c0 = cpu_seconds([p.pid])
            r = redis_benchmark(port, pl, args.requests, args.clients, args.size)
            r["server_cpu"] = cpu_seconds([p.pid]) - c0
            rows.append(("standalone", pl, r))
            log(f"  standalone -P {pl}: {r['rps']:.0f} ops/s, p50 {r['p50']} ms, p99 {r['p99']} ms")
        if p.poll() is not None:
            raise RuntimeError(f"standalone server exited with {p.returncode}")
    finally:
        stop_proc(p, "standalone")
    return rows


def cluster_throughput(args, cl):
    rows = []
    for pl in args.pipelines:
        cl.wait(cl.full, "every partition led with a full ISR", 120)
        port = random.choice(cl.ports())
        st0 = cl.status()
        e0 = leader_ends(st0)
        marks = cl.log_marks()
        c0 = cpu_seconds(cl.pids())
        z0 = cpu_seconds([cl.zk_pid])
        r = redis_benchmark(port, pl, args.requests, args.clients, args.size, cluster=True)
        r["server_cpu"] = cpu_seconds(cl.pids()) - c0
        r["zk_cpu"] = cpu_seconds([cl.zk_pid]) - z0
        st = cl.status()
        e1 = leader_ends(st)
        # redis-benchmark --cluster counts error replies other than MOVED/ASK/CLUSTERDOWN as
        # done, so count what the leaders' logs grew by instead.
        r["applied"] = None if e0 is None or e1 is None else e1 - e0
        r["written_parts"] = None if e0 is None or e1 is None else sorted(
            p for p, x in st["parts"].items()
            if x["ends"][x["leader"]][0] > st0["parts"][p]["ends"].get(
                st0["parts"][p]["leader"], (0,))[0])
        r["events"], r["samples"] = cl.log_events(marks)
        r["isr_full_after"] = cl.full(st)
        rows.append(("cluster", pl, r))
        log(f"  cluster -P {pl}: {r['rps']:.0f} ops/s, p50 {r['p50']} ms, p99 {r['p99']} ms; "
            f"records applied {r['applied']}, ISR shrinks {r['events']['isr_shrinks']}, "
            f"ERROR lines {r['events']['errors']}")
        for smp in r["samples"]:
            log(f"    {smp}")
        for m in r["messages"]:
            log(f"    redis-benchmark: {m}")
        cl.check_alive()
    return rows


def failover(args, cl):
    stop = threading.Event()
    key = key_in_partition("probe", 0, args.partitions)
    probe = Probe(cl.ports(), key, stop)
    loaders = [Loader(cl.ports(), i, stop) for i in range(args.writers)]
    results = []
    try:
        probe.start()
        for t in loaders:
            t.start()
        for k in range(args.kills):
            cl.wait(cl.full, "every partition led with a full ISR", 120)
            # Preferred leaders first: otherwise the controller's periodic imbalance check can
            # move partition 0 back to a restarted node in the middle of a measurement.
            cl.rebalance()
            # The writers must be running steadily before the kill.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and time.monotonic() - probe.last_ack > 0.2:
                time.sleep(0.05)
            time.sleep(args.settle)
            st = cl.status()
            leader = st["parts"][0]["leader"]
            if leader is None or not cl.full(st):
                raise RuntimeError(f"partition 0 not led before kill {k + 1}")
            led = sorted(p for p, x in st["parts"].items() if x["leader"] == leader)
            before = time.monotonic() - probe.last_ack
            for t in loaders:
                t.gap_since = True
            marks = cl.log_marks()
            t_kill = time.monotonic()
            wall_kill = time.time()
            probe.mark(t_kill)
            cl.kill(leader)
            deadline = t_kill + args.failover_timeout
            while probe.first_ack is None and time.monotonic() < deadline:
                time.sleep(0.002)
            took = None if probe.first_ack is None else probe.first_ack - t_kill
            # New leader of partition 0, and how long the status took to show it.
            st2 = cl.status()
            new_leader = st2["parts"][0]["leader"]
            # Where the time went, from the node logs: the controller seeing the node gone
            # (ZooKeeper session expiry) and the new leader of partition 0 taking over.
            def since_kill(pattern):
                t = cl.first_log_time(marks, pattern)
                return None if t is None else t - wall_kill
            seen_dead = since_kill(r"control: live nodes")
            new_lead = since_kill(r"partition 0: leader in epoch")
            gaps = [t.max_gap for t in loaders]
            for t in loaders:
                t.gap_since, t.max_gap = None, 0.0
            results.append({"killed": leader, "controller": st["controller"] == leader,
                            "led": led, "took": took, "new_leader": new_leader,
                            "epoch": st2["parts"][0]["epoch"], "idle_before": before,
                            "max_gap": max(gaps) if gaps else 0.0,
                            "seen_dead": seen_dead, "new_lead": new_lead})
            log(f"  kill {k + 1}: node {leader} (leading partitions {led}"
                f"{', controller' if st['controller'] == leader else ''}) SIGKILLed; first acked "
                f"write to partition 0: " + (f"{took:.3f} s" if took is not None else
                                           f"none within {args.failover_timeout} s") +
                f"; new leader {new_leader}; logs: node loss seen after {fmt(seen_dead)} s, "
                f"partition 0 led again after {fmt(new_lead)} s")
            if took is None:
                log(f"    node logs: {cl.dir}")
            # Start it again and wait for a full ISR (the next round waits too).
            t_restart = cl.restart(leader)
            _, waited = cl.wait(cl.full, f"node {leader} back in every ISR", args.rejoin_timeout)
            results[-1]["rejoin"] = time.monotonic() - t_restart
            log(f"    node {leader} restarted, back in every ISR after {results[-1]['rejoin']:.2f} s")
    finally:
        stop.set()
        probe.join(10)
        for t in loaders:
            t.join(10)
    counts = collections.Counter()
    errors = collections.Counter()
    for w in [probe.w] + [t.w for t in loaders]:
        counts.update(w.stats)
        errors.update(w.errors)
    return results, counts, errors, key


def catchup(args, cl):
    cl.wait(cl.full, "every partition led with a full ISR", 120)
    # Preferred leaders first, so the controller does not move leaders (MOVED replies, which
    # redis-benchmark counts as done) while the records are written.
    st, _ = cl.rebalance()
    victim = args.catchup_node
    if victim not in cl.nodes:
        raise RuntimeError(f"--catchup-node {victim}: no such node")
    led = sorted(p for p, x in st["parts"].items() if x["leader"] == victim)
    ends_before = sum(x["ends"].get(victim, (0, 0))[0] for x in st["parts"].values())
    cl.kill(victim)
    log(f"  node {victim} SIGKILLed (it led partitions {led}); waiting for new leaders")
    _, t_lead = cl.wait(lambda s: cl.full(s, without=victim),
                        f"every partition led by a live node with ISR without node {victim}", 60)
    live = [n["port"] for i, n in cl.nodes.items() if i != victim]
    log(f"  new leaders after {t_lead:.2f} s; writing {args.catchup_records:,} records")
    e0 = leader_ends(cl.status())
    marks = cl.log_marks()
    r = redis_benchmark(random.choice(live), 64, args.catchup_records, args.clients, args.size,
                        cluster=True, keyspace=args.catchup_records, timeout=900)
    for m in r["messages"]:
        log(f"    redis-benchmark: {m}")
    log(f"  written in {r['wall']:.1f} s ({r['rps']:.0f} ops/s)")
    st = cl.status()
    e1 = leader_ends(st)
    r["applied"] = None if e0 is None or e1 is None else e1 - e0
    r["events"], r["samples"] = cl.log_events(marks)
    log(f"  records applied {r['applied']}, ISR shrinks {r['events']['isr_shrinks']}")
    lead_dir = os.path.join(cl.dir, f"node{[i for i in cl.nodes if i != victim][0]}")
    behind_bytes = du_bytes(lead_dir) - du_bytes(os.path.join(cl.dir, f"node{victim}"))
    t_restart = cl.restart(victim)
    n = cl.nodes[victim]
    with open(os.path.join(cl.dir, f"ping-{victim}.log"), "ab") as lf:
        compare.wait_ping(n["port"], n["proc"], 120, lf)
    t_pong = time.monotonic() - t_restart
    # Time until each partition has it in its ISR, and until all do.
    first_in = {}
    deadline = t_restart + args.rejoin_timeout
    while True:
        cl.check_alive()
        st = cl.status()
        now = time.monotonic() - t_restart
        for p, x in st["parts"].items():
            if victim in x["isr"] and p not in first_in:
                first_in[p] = now
        if cl.full(st):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {victim} not back in every ISR after {args.rejoin_timeout} s:\n"
                               f"{cl.status_text()}")
        time.sleep(0.1)
    t_isr = time.monotonic() - t_restart

    def ends_equal(st):
        if not all(x["ends"] for x in st["parts"].values()):
            return None
        return all(x["ends"].get(victim, (None,))[0] == x["ends"].get(x["leader"], (None,))[0]
                   for x in st["parts"].values())

    # The log ends in the status are reported by each node on its own schedule: the first
    # status with a full ISR can show the rejoined node a report behind. Equal within 10 s
    # is the check; how long it took is reported.
    equal = ends_equal(st)
    t_equal = 0.0
    while equal is False and time.monotonic() - t_restart - t_isr < 10:
        time.sleep(0.2)
        equal = ends_equal(cl.status())
        t_equal = time.monotonic() - t_restart - t_isr
    res = {"victim": victim, "led": led, "t_lead": t_lead, "write": r, "records_behind":
           None if e1 is None else e1 - ends_before, "bytes_behind": behind_bytes, "t_pong": t_pong,
           "t_isr": t_isr, "first_in": first_in, "ends_equal": equal, "t_equal": t_equal}
    log(f"  node {victim} restarted: PONG after {t_pong:.2f} s, in every ISR after {t_isr:.2f} s")
    return res


# ---------------------------------------------------------------------------------------------

def ensure_binary(args):
    if os.path.exists(args.binary):
        return
    default = os.path.join(TARGET, "release", "simplekv")
    if os.path.abspath(args.binary) != os.path.abspath(default):
        sys.exit(f"no simplekv binary at {args.binary}")
    log(f"{args.binary} missing: cargo build --release -p simplekv-cli (first build: 6-10 min)")
    subprocess.run(["cargo", "build", "--release", "-p", "simplekv-cli"], cwd=ROOT, check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=TARGET), timeout=3600)


def fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def report(args, through, fo, cu, notes, started):
    print()
    print(f"# cluster_bench.py: {compare.machine_line(args)}")
    print(f"command: {' '.join(sys.argv)}")
    print()
    if through:
        print(f"### Throughput: redis-benchmark -t set -c {args.clients} -n {args.requests} "
              f"-d {args.size} (cluster: --cluster), fsync {args.fsync}")
        print()
        print("Standalone: 1 node (`--workers 1 --no-pin`). Cluster: 3 nodes (`cluster local "
              "--workers 1`, RF 3, acks=all, min ISR 2) + ZooKeeper. **Both share this machine's "
              f"{os.cpu_count()} cores with redis-benchmark**: the cluster runs 3 servers (every "
              "write is applied 3 times) on the same cores as one standalone server. "
              "CPU columns: seconds of CPU used during the run (all nodes / redis-benchmark).")
        print()
        print("| mode | -P | ops/s | p50 ms | p99 ms | max ms | server CPU s | bench CPU s | wall s "
              "| ratio cluster/standalone | records applied | ISR shrinks |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        base = {pl: r["rps"] for mode, pl, r in through if mode == "standalone"}
        for mode, pl, r in through:
            ratio = "" if mode == "standalone" or pl not in base else \
                f"**{r['rps'] / base[pl]:.2f}x** (target >= 0.5x)"
            print(f"| {mode} | {pl} | {r['rps']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | "
                  f"{r['max']:.3f} | {r['server_cpu']:.1f} | {r['bench_cpu']:.1f} | {r['wall']:.1f} | {ratio} | "
                  f"{'' if r.get('applied') is None else format(r['applied'], ',')} | "
                  f"{'' if 'events' not in r else str(r['events']['isr_shrinks']) + ' (' + str(r['events']['isr_leader_alone']) + ' to the leader alone)'} |")
        print()
        print("Records applied = growth of the leaders' log ends during the run (must be -n, "
              "rounded up to whole pipelines; a check that every request was a write: "
              "redis-benchmark 7.0.15 exits on an error reply other than a redirect, older 7.0 "
              "releases count it as done). "
              "ISR shrinks = 'shrinking the ISR' lines in the node logs during the run.")
        print()
        for mode, pl, r in through:
            for m in r["messages"][:10]:
                print(f"- redis-benchmark ({mode} -P {pl}) said: `{m}`")
            if r.get("written_parts") is not None:
                print(f"- {mode} -P {pl}: partitions written: {r['written_parts']} "
                      f"(redis-benchmark --cluster uses one slot per master)")
                idle = sorted(int(k[8:]) for k in r["events"] if k.startswith("shrink_p")
                              and int(k[8:]) not in r["written_parts"])
                if idle:
                    print(f"- **{mode} -P {pl}: ISR shrinks on partitions that received no writes: "
                          f"{idle}** (their followers 'fell behind' while idle; acks=all writes to "
                          f"them get -NOREPLICAS while the ISR is the leader alone)")
            want = expected_records(args.requests, pl)
            if r.get("applied") is not None and r["applied"] < want:
                print(f"- **{mode} -P {pl}: {want - r['applied']:,} of {want:,} "
                      f"requests were not applied** (error replies)")
            for smp in r.get("samples", []):
                print(f"- {mode} -P {pl} log: `{smp}`")
        print()
    if fo:
        results, counts, errors, key = fo
        took = [r["took"] for r in results if r["took"] is not None]
        print(f"### Failover: kill -9 of the leader of partition 0, to the first acknowledged "
              f"(acks=all) write on key {key!r} sent after the kill")
        print()
        print(f"Load: 1 probe writing {key!r} back to back + {args.writers} writers over every "
              f"partition (python, one request at a time, follows -MOVED, retries -TRYAGAIN/"
              f"-CLUSTERDOWN every 10 ms). Session timeout "
              f"{'2000 ms (default)' if not any(s.startswith('cluster.session_timeout_ms') for s in args.set) else 'see --set'}.")
        print()
        print("Before each kill: every ISR full and every partition led by its preferred replica "
              "(`simplekv cluster rebalance`), then 1 s of steady load.")
        print()
        print("Log columns: from the kill to the first node log line saying the live nodes "
              "changed (ZooKeeper expired the session), and to the new leader's 'partition 0: "
              "leader in epoch' line (log clock, ms resolution).")
        print()
        print("| kill | node killed | partitions it led | failover s | log: loss seen s | "
              "log: new leader s | new leader (epoch) | writers' longest stall s | "
              "node back in every ISR after restart s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for i, r in enumerate(results, 1):
            print(f"| {i} | {r['killed']}{' (controller)' if r['controller'] else ''} | "
                  f"{','.join(map(str, r['led']))} | "
                  f"{fmt(r['took']) if r['took'] is not None else 'none in ' + str(args.failover_timeout) + ' s'} | "
                  f"{fmt(r['seen_dead'])} | {fmt(r['new_lead'])} | "
                  f"{r['new_leader']} ({r['epoch']}) | {r['max_gap']:.3f} | {fmt(r.get('rejoin'), '.2f')} |")
        print()
        if took:
            print(f"**Failover: min {min(took):.3f} s, median {statistics.median(took):.3f} s, "
                  f"max {max(took):.3f} s over {len(took)} kills** (target <= 3 s)"
                  + ("" if len(took) == len(results) else f"; {len(results) - len(took)} kills without "
                     f"an acknowledged write within {args.failover_timeout} s"))
        else:
            print("**Failover: no kill was followed by an acknowledged write**")
        print()
        print(f"Writer replies/events: {dict(sorted(counts.items()))}")
        unknown = {k: v for k, v in errors.items() if "may or may not have been applied" in k}
        other = {k: v for k, v in errors.items() if k not in unknown}
        if unknown:
            print(f"Outcome-unknown replies (documented: the partition stopped being led here while "
                  f"the write waited for its acks; retried): {unknown}")
        if other:
            print(f"**Other error replies (anomalies)**: {other}")
        else:
            print("Other error replies: none")
        print()
    if cu:
        w = cu["write"]
        print(f"### Catch-up: node {cu['victim']} killed, {args.catchup_records:,} records written, "
              f"node restarted")
        print()
        print(f"- new leaders for its partitions ({','.join(map(str, cu['led']))}) after "
              f"{cu['t_lead']:.2f} s (status poll)")
        print(f"- writes: `{w['cmd']}`: {w['rps']:.0f} ops/s, {w['wall']:.1f} s, p99 {w['p99']:.3f} ms")
        for m in w["messages"][:10]:
            print(f"  - redis-benchmark said: `{m}`")
        if w.get("applied") is not None:
            print(f"  - records applied (leaders' log ends grew by): {w['applied']:,}"
                  + ("" if w["applied"] >= args.catchup_records else
                     f" **({args.catchup_records - w['applied']:,} short: replies that were not +OK, "
                     f"e.g. -MOVED, which redis-benchmark counts as done)**")
                  + f"; ISR shrinks meanwhile: {w['events']['isr_shrinks']} "
                    f"({w['events']['isr_leader_alone']} to the leader alone)")
        for smp in w.get("samples", []):
            print(f"  - log: `{smp}`")
        behind = (f"{cu['records_behind']:,} log records (sum over partitions of leader log end "
                  f"- its log end), " if cu["records_behind"] else "")
        print(f"- behind at restart: {behind}~{cu['bytes_behind'] / 2**20:.0f} MiB of data "
              f"(data dir of a live node - its own)")
        print(f"- restart to first PONG: {cu['t_pong']:.2f} s")
        fi = sorted(cu["first_in"].values())
        print(f"- **restart to back in every ISR: {cu['t_isr']:.2f} s** (first partition after "
              f"{fi[0]:.2f} s, median {statistics.median(fi):.2f} s)" if fi else
              f"- **restart to back in every ISR: {cu['t_isr']:.2f} s**")
        if cu["ends_equal"] is not None:
            print(f"- log ends equal to the leaders' afterwards: "
                  + (f"yes ({cu['t_equal']:.1f} s after the full ISR was first seen)"
                     if cu['ends_equal'] else "NO (within 10 s)"))
        print()
    for n in notes:
        print(f"- {n}")
    print(f"(total {time.monotonic() - started:.0f} s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(TARGET, "release", "simplekv"))
    ap.add_argument("--requests", type=int, default=1_000_000, help="redis-benchmark -n")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--size", type=int, default=16, help="value bytes (-d)")
    ap.add_argument("--pipeline", default="1,16")
    ap.add_argument("--fsync", default="everysec")
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="extra node setting for the cluster nodes, repeatable")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--writers", type=int, default=3, help="background writer threads (failover)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds of steady load before a kill")
    ap.add_argument("--failover-timeout", type=float, default=30.0)
    ap.add_argument("--rejoin-timeout", type=float, default=180.0)
    ap.add_argument("--catchup-records", type=int, default=1_000_000)
    ap.add_argument("--catchup-node", type=int, default=3)
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-failover", action="store_true")
    ap.add_argument("--no-catchup", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--autogroup-nice", type=int, metavar="N", help="as in compare.py (root only)")
    args = ap.parse_args()
    args.pipelines = [int(p) for p in args.pipeline.split(",")]
    args.workers = 1
    compare.AUTOGROUP_NICE = args.autogroup_nice
    if not 1 <= args.kills <= 20:
        sys.exit("--kills must be 1..20")
    for tool in ("redis-benchmark", "java"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: run scripts/setup.sh")
    ensure_binary(args)

    # SIGTERM/SIGHUP: clean up as for Ctrl-C.
    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="skv-cluster-bench-")
    log(f"working directory {tmp}")
    through, fo, cu, notes = [], None, None, []
    cl = None
    failed = False
    try:
        if not args.no_throughput:
            log("standalone throughput")
            through += standalone_throughput(args, tmp)
        log("starting the cluster")
        cl = LocalCluster(args.binary, os.path.join(tmp, "cluster"), 3, args.partitions, 1,
                          args.fsync, args.set)
        _, waited = cl.wait(cl.full, "every partition led with a full ISR", 120)
        log(f"  every ISR full {waited:.1f} s after cluster local reported ready")
        if not args.no_throughput:
            log("cluster throughput")
            through += cluster_throughput(args, cl)
        if not args.no_failover:
            log(f"failover: {args.kills} kills")
            fo = failover(args, cl)
        if not args.no_catchup:
            log("catch-up")
            cu = catchup(args, cl)
        cl.check_alive()
    except BaseException as e:
        failed = True
        log(f"FAILED: {type(e).__name__}: {e}")
        if cl is not None:
            for nid, n in sorted(cl.nodes.items()):
                log(f"--- {n['log']} (end) ---\n{tail_file(n['log'], 2500)}")
        notes.append(f"run FAILED: {type(e).__name__}: {str(e)[:500]}")
    finally:
        if cl is not None:
            # Errors and panics in the node logs are anomalies; WARN lines are expected around
            # kills (streams ending, ISR shrinking) and are only counted by kind.
            for nid, n in sorted(cl.nodes.items()):
                errs, warns = [], collections.Counter()
                try:
                    with open(n["log"], errors="replace") as f:
                        for l in f:
                            if re.search(r" ERROR |panicked", l):
                                errs.append(l.rstrip())
                            elif " WARN " in l:
                                kind = re.sub(r"\d+", "N", l.split(" WARN ", 1)[1].strip())
                                warns[re.sub(r"ipv4:\S+", "ADDR", kind)[:110]] += 1
                except OSError:
                    pass
                if errs:
                    notes.append(f"node {nid} log: **{len(errs)} ERROR/panic lines**: "
                                 + " | ".join(e[:300] for e in errs[:5]))
                if warns:
                    notes.append(f"node {nid} log: {sum(warns.values())} WARN lines; most common: "
                                 + "; ".join(f"{c}x {k}" for k, c in warns.most_common(4)))
            cl.stop()
        for p, label in PROCS:
            if p.poll() is None:
                stop_proc(p, label)
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(args, through, fo, cu, notes, started)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
