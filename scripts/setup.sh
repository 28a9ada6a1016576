#!/usr/bin/env bash
# Installs the system packages simplekv needs to build and test, idempotently and
# non-interactively. Safe to run again: packages already present are skipped.
#   cmake, g++, make : grpcio-sys builds gRPC's C core (vendored, no TLS)
#   zookeeper        : ZooKeeper 3.8 server jars (+ Java) for cluster tests and `cluster local`
#   redis-server     : redis-server / redis-cli / redis-benchmark, the reference we compare against
#   iproute2         : `ip netns` for the fault-injection tests
#   python3          : benchmark scripts; python3-redis: redis-py, a cluster client the tests use
# With --profiling, also the tools docs/PERFORMANCE.md uses: linux-perf (perf), sysstat
# (pidstat), valgrind (callgrind).
set -euo pipefail
pkgs=(cmake g++ make zookeeper redis-server redis-tools iproute2 python3 python3-redis procps)
if [ "${1:-}" = "--profiling" ]; then
  pkgs+=(linux-perf sysstat valgrind)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distro redis-server unit may have started a daemon on 6379; we never rely on it.
if command -v cargo >/dev/null; then :; else
  echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1
fi
echo "setup: system packages ready" >&2
