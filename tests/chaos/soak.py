"""Chaos and soak test: many clients, well-behaved and not, against the
twincore echo server in tests/chaos/server.py, for a bounded time.

    PYTHONPATH=build/pymod /usr/bin/python3 tests/chaos/soak.py --seconds 60

The server runs in its own process (so its memory and descriptors can be
read from /proc); the clients are plain asyncio in this one.  Phases:
warm-up (a few clients, then the baseline of the server's RSS and open
descriptors), two rounds of chaos (up to --concurrency clients at once,
each picking a behaviour at random, until the round's time is up), each
followed by a settle (every client gone; the server's descriptors back to
the baseline), stop (SIGTERM; the server
reports its counters and its timer lateness).

Behaviours: ``good`` streams a random amount in random chunk sizes while
reading the echo, half-closes, reads to EOF and compares length and
SHA-256; ``slow_reader`` does the same but stops reading for a while now
and then; ``trickle`` sends a byte at a time with pauses; ``reset`` sends
part and resets (RST); ``vanish`` sends part and closes without reading;
``half_close_vanish`` half-closes and closes at once; ``never_reads``
sends until the server pushes back, then closes; ``idle`` connects and
waits; ``connect_close`` closes at once.

Passes when: every well-behaved client got its bytes back intact (bytes
lost: zero), none stalled, enough of them ran, the server stayed up,
its descriptors returned to the baseline exactly and its RSS to within a
margin of it (and did not grow from the first round to the second), the reactor's timer lateness stayed under a generous bound,
and the server exited 0.  Every wait is bounded; the server is killed by
its PID if it does not stop.  Loopback only.
"""

import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GOOD = ("good", "slow_reader", "trickle")
BEHAVIOURS = {          # weight
    "good": 40, "slow_reader": 10, "trickle": 4, "reset": 10, "vanish": 10,
    "half_close_vanish": 8, "never_reads": 6, "idle": 6, "connect_close": 6,
}
CLIENT_TIMEOUT = 30.0
RSS_MARGIN = 64 << 20          # bytes over the baseline allowed at the end
ROUND_GROWTH = 16 << 20        # ... and from the first round to the second
LATE_MAX_S = 2.0               # generous: a stalled reactor shows as seconds
LATE_P99_S = 0.5


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def chunk_size(rng):
    # Log-uniform from 1 byte to 64 KiB.
    return max(1, int(2 ** rng.uniform(0, 16)))


def total_size(rng):
    r = rng.random()
    if r < 0.70:
        return rng.randrange(0, 64 << 10)
    if r < 0.95:
        return rng.randrange(64 << 10, 1 << 20)
    return rng.randrange(1 << 20, 4 << 20)


class Result:
    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.ok = True
        self.error = None
        self.sent = 0
        self.echoed = 0


async def send_all(writer, rng, total, h, res, pause=0.0):
    left = total
    while left > 0:
        n = min(left, chunk_size(rng))
        data = rng.randbytes(n)
        h.update(data)
        writer.write(data)
        res.sent += n
        left -= n
        await writer.drain()
        if pause:
            await asyncio.sleep(pause)
        elif rng.random() < 0.05:
            await asyncio.sleep(rng.uniform(0, 0.02))


async def read_all(reader, h, res, rng=None):
    while True:
        if rng is not None and rng.random() < 0.05:
            await asyncio.sleep(rng.uniform(0.05, 0.5))   # stop reading
        data = await reader.read(65536)
        if not data:
            return
        h.update(data)
        res.echoed += len(data)


async def well_behaved(port, rng, res, slow=False, trickle=False):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        sent_h, echo_h = hashlib.sha256(), hashlib.sha256()
        total = rng.randrange(1, 40) if trickle else total_size(rng)
        rd = asyncio.ensure_future(read_all(reader, echo_h, res,
                                            rng if slow else None))
        if trickle:
            # send_all with 1-byte chunks and pauses
            for _ in range(total):
                b = rng.randbytes(1)
                sent_h.update(b)
                writer.write(b)
                res.sent += 1
                await writer.drain()
                await asyncio.sleep(rng.uniform(0.02, 0.1))
        else:
            await send_all(writer, rng, total, sent_h, res)
        writer.write_eof()
        await rd
        if res.echoed != res.sent or echo_h.digest() != sent_h.digest():
            res.ok = False
            res.error = (f"sent {res.sent} bytes, got back {res.echoed}"
                         f"{'' if res.echoed != res.sent else ', corrupted'}")
    finally:
        writer.close()


async def misbehaving(port, rng, res):
    kind = res.behaviour
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    h = hashlib.sha256()
    try:
        if kind == "reset":
            await send_all(writer, rng, rng.randrange(0, 256 << 10), h, res)
            await asyncio.sleep(rng.uniform(0, 0.05))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif kind == "vanish":
            await send_all(writer, rng, rng.randrange(0, 256 << 10), h, res)
            writer.transport.abort()
        elif kind == "half_close_vanish":
            await send_all(writer, rng, rng.randrange(0, 64 << 10), h, res)
            writer.write_eof()
            await asyncio.sleep(rng.uniform(0, 0.05))
            writer.transport.abort()
        elif kind == "never_reads":
            try:
                await asyncio.wait_for(
                    send_all(writer, rng, 8 << 20, h, res), 2.0)
            except asyncio.TimeoutError:
                pass    # the server pushed back: expected
            writer.transport.abort()
        elif kind == "idle":
            await asyncio.sleep(rng.uniform(0, 2.0))
            writer.close()
        elif kind == "connect_close":
            writer.transport.abort()
    except (ConnectionError, OSError):
        pass        # the server may see a reset first; all legal here
    finally:
        writer.close()


async def one_client(port, rng, behaviour):
    res = Result(behaviour)
    try:
        if behaviour in GOOD:
            await asyncio.wait_for(
                well_behaved(port, rng, res, slow=behaviour == "slow_reader",
                             trickle=behaviour == "trickle"),
                CLIENT_TIMEOUT)
        else:
            await asyncio.wait_for(misbehaving(port, rng, res),
                                   CLIENT_TIMEOUT)
    except asyncio.TimeoutError:
        res.ok = behaviour not in GOOD
        res.error = f"stalled for {CLIENT_TIMEOUT} s"
    except Exception as exc:        # noqa: BLE001 - reported below
        res.ok = behaviour not in GOOD
        res.error = repr(exc)
    return res


async def run_clients(port, rng, seconds, concurrency, results):
    names = list(BEHAVIOURS)
    weights = [BEHAVIOURS[n] for n in names]
    deadline = time.monotonic() + seconds
    running = set()
    while time.monotonic() < deadline:
        while len(running) < concurrency:
            b = rng.choices(names, weights)[0]
            crng = random.Random(rng.getrandbits(64))
            running.add(asyncio.ensure_future(one_client(port, crng, b)))
        done, running = await asyncio.wait(
            running, timeout=max(0.0, deadline - time.monotonic()),
            return_when=asyncio.FIRST_COMPLETED)
        results.extend(t.result() for t in done)
    if running:     # the last ones finish on their own (bounded by timeout)
        done, _ = await asyncio.wait(running)
        results.extend(t.result() for t in done)


async def warm_up(port, rng):
    results = []
    await asyncio.gather(*(one_client(port, random.Random(i), "good")
                           for i in range(16)))
    return results


def wait_for(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="whole run, warm-up and settle included")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    t_start = time.monotonic()
    print(f"chaos soak: seed {seed}, {args.seconds:.0f} s, "
          f"{args.concurrency} clients at once", flush=True)

    env = dict(os.environ)
    env.setdefault("TWINCORE_CPU_WORKERS", "2")
    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "server.py")],
        stdout=subprocess.PIPE, text=True, env=env)
    failures = []
    try:
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            print("server did not start:", line)
            return 1
        port = int(line.split()[1])
        pid = server.pid

        asyncio.run(warm_up(port, rng))
        wait_for(lambda: False, 0.5)
        base_fds, base_rss = open_fds(pid), rss_bytes(pid)

        results = []
        round_s = max(3.0, (args.seconds - 20.0 -
                            (time.monotonic() - t_start)) / 2)
        samples = []

        async def chaos():
            async def sample():
                while True:
                    samples.append((open_fds(pid), rss_bytes(pid)))
                    await asyncio.sleep(0.5)
            s = asyncio.ensure_future(sample())
            try:
                await run_clients(port, rng, round_s, args.concurrency,
                                  results)
            finally:
                s.cancel()

        # Two rounds: the first may grow the allocator's pools; the second
        # must not grow them further (a leak grows with every client).
        t0 = time.monotonic()
        settled = []
        for _ in range(2):
            asyncio.run(chaos())
            if server.poll() is not None:
                failures.append(f"server died: exit {server.returncode}")
                break
            fds_back = wait_for(lambda: open_fds(pid) == base_fds, 15.0)
            settled.append((open_fds(pid), rss_bytes(pid), fds_back))
        chaos_took = time.monotonic() - t0
        end_fds, end_rss, fds_back = settled[-1]
        mid_rss = settled[0][1]
        peak_fds = max(f for f, _ in samples) if samples else end_fds
        peak_rss = max(r for _, r in samples) if samples else end_rss

        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=20)
        stats = json.loads(out.strip().splitlines()[-1])
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    by = collections.defaultdict(lambda: [0, 0])
    sent = echoed = 0
    for r in results:
        by[r.behaviour][0] += 1
        if not r.ok:
            by[r.behaviour][1] += 1
            failures.append(f"{r.behaviour} client: {r.error}")
        if r.behaviour in GOOD:
            sent += r.sent
            echoed += r.echoed
    good_n = sum(by[b][0] for b in GOOD)
    lost = sent - echoed
    print(f"clients: {len(results)} in 2 rounds, {chaos_took:.1f} s (" +
          ", ".join(f"{b} {by[b][0]}" for b in BEHAVIOURS) + ")")
    print(f"well-behaved: {good_n} clients, {sent} bytes sent, {echoed} "
          f"echoed intact, bytes lost: {lost}")
    print(f"server: accepted {stats.get('accepted', 0)}, offloaded "
          f"{stats.get('offloaded', 0)} chunks to the pool, "
          f"{stats.get('lost_error', 0)} connections ended in an error, "
          f"max {stats.get('max_open', 0)} open at once")
    print(f"server descriptors: {base_fds} at start, peak {peak_fds}, "
          f"{end_fds} at end")
    print(f"server RSS: {base_rss >> 20} MiB at start, peak "
          f"{peak_rss >> 20} MiB, {mid_rss >> 20} MiB after round 1, "
          f"{end_rss >> 20} MiB after round 2")
    print(f"reactor timer lateness ({stats.get('ticks', 0)} ticks of 10 ms): "
          f"p50 {stats.get('late_p50_ms')} ms, p99 "
          f"{stats.get('late_p99_ms')} ms, max {stats.get('late_max_ms')} ms")

    if good_n < 20:
        failures.append(f"only {good_n} well-behaved clients ran")
    if lost != 0:
        failures.append(f"{lost} bytes lost")
    if not fds_back:
        failures.append(f"descriptors: {end_fds} at end, {base_fds} at start")
    if end_rss > base_rss + RSS_MARGIN:
        failures.append(f"RSS {end_rss >> 20} MiB at end, "
                        f"{base_rss >> 20} MiB at start")
    if end_rss > mid_rss + ROUND_GROWTH:
        failures.append(f"RSS grew from {mid_rss >> 20} MiB after round 1 "
                        f"to {end_rss >> 20} MiB after round 2")
    if stats.get("open", 0) != 0:
        failures.append(f"server still counts {stats['open']} connections")
    if stats.get("late_max_ms", 1e9) > LATE_MAX_S * 1e3 or \
            stats.get("late_p99_ms", 1e9) > LATE_P99_S * 1e3:
        failures.append("reactor timer lateness over the bound")
    if server.returncode != 0:
        failures.append(f"server exit status {server.returncode}")
    for f in failures[:20]:
        print("FAIL:", f)
    print(f"chaos soak: {'passed' if not failures else 'FAILED'} "
          f"(seed {seed}, {time.monotonic() - t_start:.0f} s)")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
