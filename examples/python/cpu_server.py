"""A line-protocol server whose work is pure Python (it never releases the
GIL), offloaded to twincore's process lane so that it uses every core while
the loop stays responsive.

    python3 examples/python/cpu_server.py [--port PORT] [--mode MODE]
    python3 examples/python/cpu_server.py --selftest [--seconds S]

Each request is one line; the reply is one line:
    PING        -> PONG                       (answered at once, on the loop)
    N           -> the number of primes below N, counted in pure Python

--mode process (default) counts with twincore.defer_to_process: worker
processes, one per CPU, do the counting. --mode inline counts on the loop
thread: one core, and every PING waits. --selftest starts the server in
both modes in this process, drives it with a built-in client and prints the
requests per second, the ping latency and the cores the work used (worker
CPU time / wall time).
"""

import argparse
import os
import statistics
import time
from collections import deque

import twincore


def count_primes(n):
    """Pure-Python CPU work: holds the GIL from start to end."""
    count = 0
    for k in range(2, n):
        d = 2
        while d * d <= k:
            if k % d == 0:
                break
            d += 1
        else:
            count += 1
    return count


class CpuProtocol(twincore.Protocol):
    def __init__(self, mode):
        self.mode = mode
        self.buf = b""
        self.replies = deque()      # Futures or bytes, in request order

    def data_received(self, data):
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self.line_received(line.strip())

    def line_received(self, line):
        if line == b"PING":
            self.replies.append(b"PONG")
        elif not line.isdigit():
            self.replies.append(b"ERR expected PING or a number")
        elif self.mode == "inline":
            self.replies.append(str(count_primes(int(line))).encode())
        else:
            fut = twincore.defer_to_process(count_primes, int(line))
            fut.add_done_callback(lambda _: self.flush())
            self.replies.append(fut)
        self.flush()

    def flush(self):
        while self.replies:
            head = self.replies[0]
            if isinstance(head, twincore.Future):
                if not head.done():
                    return
                head = (str(head.result()).encode()
                        if head.exception() is None else b"ERR worker")
            self.replies.popleft()
            if not self.transport.is_closing():
                self.transport.write(head + b"\n")


# ---- the self-test --------------------------------------------------------

class Client(twincore.Protocol):
    def __init__(self, lines, on_reply):
        self.lines = lines
        self.on_reply = on_reply
        self.buf = b""

    def connection_made(self, transport):
        super().connection_made(transport)
        self.send()

    def send(self):
        self.sent_at = time.perf_counter()
        self.transport.write(next(self.lines) + b"\n")

    def data_received(self, data):
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self.on_reply(self, line)


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


async def selftest_mode(mode, seconds, n):
    reactor = twincore.get_running_reactor()
    listener = reactor.listen_tcp(0, twincore.Factory(CpuProtocol, mode))
    pool = twincore.default_process_pool()
    pids = pool.pids() if mode == "process" else [os.getpid()]
    done = {"work": 0, "pings": []}
    deadline = time.perf_counter() + seconds

    def work_reply(client, line):
        done["work"] += 1
        if time.perf_counter() < deadline:
            client.send()

    def ping_reply(client, line):
        done["pings"].append(time.perf_counter() - client.sent_at)
        if time.perf_counter() < deadline:
            reactor.call_later(0.01, client.send)

    def lines(text):
        while True:
            yield text

    cpu0 = cpu_seconds(pids)
    t0 = time.perf_counter()
    clients = [await reactor.connect_tcp(
        "127.0.0.1", listener.port,
        twincore.Factory(Client, lines(str(n).encode()), work_reply))
        for _ in range(2 * pool.workers)]
    pinger = await reactor.connect_tcp(
        "127.0.0.1", listener.port,
        twincore.Factory(Client, lines(b"PING"), ping_reply))
    while time.perf_counter() < deadline:
        await twincore.sleep(0.05)
    await twincore.sleep(0.5)      # the last replies
    wall = time.perf_counter() - t0
    cores = (cpu_seconds(pids) - cpu0) / wall
    for c in clients + [pinger]:
        c.transport.close()
    listener.close()
    pings = sorted(done["pings"]) or [float("nan")]
    print(f"{mode:8} {done['work'] / seconds:9.1f} "
          f"{statistics.median(pings) * 1e3:12.2f} "
          f"{max(pings) * 1e3:11.2f} {cores:11.2f}")


async def selftest(seconds, n):
    twincore.default_process_pool()    # workers start before the clock
    print(f"{'mode':8} {'req/s':>9} {'ping p50 ms':>12} {'ping max ms':>11} "
          f"{'cores used':>11}")
    await selftest_mode("inline", seconds, n)
    await selftest_mode("process", seconds, n)


def main():
    p = argparse.ArgumentParser(prog="cpu_server.py")
    p.add_argument("--port", type=int, default=8010)
    p.add_argument("--mode", choices=("process", "inline"),
                   default="process")
    p.add_argument("--selftest", action="store_true")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--n", type=int, default=30000,
                   help="selftest: count the primes below N per request")
    args = p.parse_args()
    if args.selftest:
        twincore.run(selftest(args.seconds, args.n))
        return
    reactor = twincore.reactor
    reactor.listen_tcp(args.port, twincore.Factory(CpuProtocol, args.mode))
    print(f"listening on 127.0.0.1:{args.port} ({args.mode})", flush=True)
    try:
        reactor.run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":   # workers import this file: keep it guarded
    main()
