#!/bin/bash
# Where a TLS echo server's CPU goes, per message: the kernel, OpenSSL's
# libcrypto (the AES-GCM records), and everything else (the event loop,
# libssl's record layer, Python).  The kernel and libcrypto parts are the
# same for every server that does one recv and one send per message with
# the same cipher, so they bound how far any server can beat another.
#
#   bash bench/tls_profile.sh [BUILD_DIR] [RUNS]
#
# Needs perf (Debian: linux-perf), the built bench/loadgen and
# examples/c/tls_echo_server, and python3-uvloop.  Server on CPU 1, load
# generator on CPU 0, 1 KiB x 64 connections, as in run.py's TLS section.
set -euo pipefail

cd "$(dirname "$0")/.."
build=${1:-build}
runs=${2:-2}
py=/usr/bin/python3
tmp=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 1 \
    -subj /CN=localhost 2>/dev/null

profile() {
    local name=$1 port=$2
    shift 2
    taskset -c 1 "$@" >/dev/null 2>&1 &
    server_pid=$!
    sleep 1.5
    perf record -q -p "$server_pid" -o "$tmp/$name.perf" -- sleep 4.5 \
        >/dev/null 2>&1 &
    local perf_pid=$!
    sleep 0.2
    taskset -c 0 "$build/bench/loadgen" -P "$port" -c 64 -s 1024 -d 4 \
        -w 0.2 --sample-pid "$server_pid" --tls -k >"$tmp/$name.json"
    wait "$perf_pid"
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    perf report -i "$tmp/$name.perf" --no-children --sort dso -g none \
        2>/dev/null >"$tmp/$name.dso"
    "$py" - "$name" "$tmp" <<'EOF'
import json
import sys

name, tmp = sys.argv[1], sys.argv[2]
run = json.load(open(f"{tmp}/{name}.json"))
share = {}
for line in open(f"{tmp}/{name}.dso"):
    fields = line.split(None, 1)
    if len(fields) == 2 and fields[0].endswith("%"):
        share[fields[1].strip()] = float(fields[0].rstrip("%")) / 100
us = run["server_cpu_s"] / run["msgs"] * 1e6
kernel = us * share.get("[kernel.kallsyms]", 0)
crypto = us * share.get("libcrypto.so.3", 0)
print(f"{name:12} {run['msgs_per_s']:9,.0f} msgs/s  server {us:5.2f} us/msg:"
      f" kernel {kernel:4.2f}  libcrypto {crypto:4.2f}"
      f"  rest {us - kernel - crypto:4.2f}")
EOF
}

for _ in $(seq "$runs"); do
    profile twincore-c 9443 "$build/examples/c/tls_echo_server" 9443 \
        "$tmp/cert.pem" "$tmp/key.pem"
    profile uvloop 9444 "$py" bench/servers/uvloop_echo.py 9444 \
        --tls "$tmp/cert.pem" "$tmp/key.pem"
done
