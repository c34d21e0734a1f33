"""The twincore demo: why CPU work belongs off the event loop.

Starts examples/python/hash_service.py twice, first hashing inline on the
loop, then offloading to the CPU pool with defer_to_cpu, and drives each with
a built-in twincore client: hash clients keep requests in flight while a
ping client measures how long a trivial request waits. Prints requests per
second and the ping latency for both modes.

    python3 examples/python/demo.py [--seconds S] [--iterations N]
"""

import argparse
import hashlib
import os
import subprocess
import sys
import time

import twincore

HERE = os.path.dirname(os.path.abspath(__file__))
SALT = b"twincore-demo"


class LineClient(twincore.Protocol):
    def __init__(self):
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self.line_received(line)


class HashClient(LineClient):
    """Keeps `depth` requests in flight until the deadline."""

    def __init__(self, stats, cid, depth, iterations):
        super().__init__()
        self.stats, self.cid, self.depth = stats, cid, depth
        self.iterations = iterations
        self.sent = 0
        self.pending = []

    def connection_made(self, transport):
        super().connection_made(transport)
        for _ in range(self.depth):
            self.send()

    def send(self):
        line = f"req-{self.cid}-{self.sent}".encode()
        self.sent += 1
        self.pending.append(line)
        self.transport.write(line + b"\n")

    def line_received(self, line):
        request = self.pending.pop(0)
        if not self.stats["checked"]:   # check one reply end to end
            want = hashlib.pbkdf2_hmac("sha256", request, SALT,
                                       self.iterations).hex().encode()
            if line != want:
                self.stats["errors"] += 1
            self.stats["checked"] = True
        self.stats["replies"] += 1
        if not self.stats["stopping"]:
            self.send()


class PingClient(LineClient):
    """Sends PING every 10 ms and records each round trip."""

    def __init__(self, stats, reactor):
        super().__init__()
        self.stats, self.reactor = stats, reactor
        self.sent_at = []

    def connection_made(self, transport):
        super().connection_made(transport)
        self.tick()

    def tick(self):
        if self.stats["stopping"]:
            return
        self.sent_at.append(time.perf_counter())
        self.transport.write(b"PING\n")
        self.reactor.call_later(0.01, self.tick)

    def line_received(self, line):
        if line != b"PONG":
            self.stats["errors"] += 1
        self.stats["pings"].append(time.perf_counter() - self.sent_at.pop(0))


def start_service(mode, iterations):
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "hash_service.py"), "--port",
         "0", "--mode", mode, "--iterations", str(iterations)],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if ":" not in line:
        proc.kill()
        raise SystemExit(f"demo: hash_service did not start: {line!r}")
    return proc, int(line.split(":")[2].split(",")[0])


def measure(mode, seconds, iterations, clients=8, depth=2):
    proc, port = start_service(mode, iterations)
    reactor = twincore.Reactor()
    stats = {"replies": 0, "pings": [], "errors": 0, "checked": False,
             "stopping": False}

    async def main():
        for cid in range(clients):
            await reactor.connect_tcp(
                "127.0.0.1", port,
                lambda cid=cid: HashClient(stats, cid, depth, iterations))
        await reactor.connect_tcp("127.0.0.1", port,
                                  lambda: PingClient(stats, reactor))
        start = time.perf_counter()
        await twincore.sleep(seconds, reactor=reactor)
        elapsed = time.perf_counter() - start
        stats["stopping"] = True
        return stats["replies"] / elapsed

    try:
        rate = twincore.run(main(), reactor=reactor)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    pings = sorted(stats["pings"])
    if not pings or stats["errors"]:
        raise SystemExit(f"demo: {mode}: {stats['errors']} bad replies, "
                         f"{len(pings)} pings answered")

    def pct(p):
        return pings[min(len(pings) - 1, int(p * len(pings)))] * 1000
    return rate, pct(0.50), pct(0.99), pings[-1] * 1000


def main():
    ap = argparse.ArgumentParser(description="twincore demo")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--iterations", type=int, default=20000)
    args = ap.parse_args()
    print(f"twincore demo: PBKDF2-SHA256 ({args.iterations} iterations) per "
          f"request, 8 clients x 2 in flight, plus one PING every 10 ms; "
          f"{os.cpu_count()} CPUs\n")
    print(f"{'mode':<9}{'hash req/s':>12}{'ping p50 ms':>14}"
          f"{'ping p99 ms':>14}{'ping max ms':>14}")
    rows = {}
    for mode in ("inline", "offload"):
        rows[mode] = measure(mode, args.seconds, args.iterations)
        rate, p50, p99, worst = rows[mode]
        print(f"{mode:<9}{rate:>12.0f}{p50:>14.2f}{p99:>14.2f}"
              f"{worst:>14.2f}", flush=True)
    inline, offload = rows["inline"], rows["offload"]
    print(f"\nOffloading with defer_to_cpu: {offload[0] / inline[0]:.1f}x the "
          f"hashing throughput, and a PING waits {inline[1] / offload[1]:.0f}x "
          f"less at the median ({inline[1]:.2f} ms -> {offload[1]:.2f} ms): "
          "the loop never blocks on CPU work.")
    # Pure-Python work holds the GIL, so threads cannot spread it: the
    # process lane can. cpu_server.py prints the cores each mode used.
    print("\nPure-Python CPU work (counting primes), inline and on the "
          "process lane (defer_to_process):\n", flush=True)
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, os.path.join(here, "cpu_server.py"),
                    "--selftest"], check=True, timeout=300)


if __name__ == "__main__":
    main()
