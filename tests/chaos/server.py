"""The server under test in the chaos soak: an echo server on twincore.

Every byte is echoed back in order.  Chunks of 4 KiB or more, and every
fifth smaller one, first travel through ``defer_to_cpu`` (a zlib round trip
on a pool worker, which releases the GIL); results are written back in
arrival order.  Backpressure both ways: a transport over its high watermark
pauses reading from its client, and so does a backlog of more than eight
chunks waiting on the pool.  When a client half-closes, the server finishes
echoing, half-closes too, and closes.

A repeating 10 ms timer measures the reactor's lateness.  The server prints
``PORT <n>`` when it listens, runs until SIGTERM, then prints one JSON line
of counters and exits 0.  Loopback only.
"""

import collections
import json
import signal
import sys
import time
import zlib

import twincore

TICK = 0.010
MAX_BACKLOG = 8

reactor = twincore.reactor
stats = collections.Counter()
lateness = []


def roundtrip(data):
    """On a pool worker: a CPU-bound identity."""
    return zlib.decompress(zlib.compress(data, 1))


class Echo(twincore.Protocol):
    def connection_made(self, transport):
        super().connection_made(transport)
        self.backlog = collections.deque()   # [bytes or None], in order
        self.chunks = 0
        self.write_paused = False
        self.backlog_paused = False
        self.eof = False
        self.finished = False
        self.lost = False
        stats["accepted"] += 1
        stats["open"] += 1
        stats["max_open"] = max(stats["max_open"], stats["open"])

    def data_received(self, data):
        stats["bytes_in"] += len(data)
        self.chunks += 1
        if len(data) >= 4096 or self.chunks % 5 == 0:
            slot = [None]
            self.backlog.append(slot)
            stats["offloaded"] += 1
            fut = reactor.defer_to_cpu(roundtrip, data)
            fut.add_callbacks(self._ready, self._failed,
                              callback_args=(slot,),
                              errback_args=(slot,))
        elif self.backlog:
            self.backlog.append([data])
        else:
            self._write(data)
        if len(self.backlog) > MAX_BACKLOG and not self.backlog_paused:
            self.backlog_paused = True
            self._update_reading()

    def _ready(self, out, slot):
        slot[0] = out
        self._drain_backlog()

    def _failed(self, exc, slot):
        stats["offload_failed"] += 1
        if not self.lost:
            self.transport.abort()

    def _drain_backlog(self):
        while self.backlog and self.backlog[0][0] is not None:
            self._write(self.backlog.popleft()[0])
        if self.backlog_paused and len(self.backlog) <= MAX_BACKLOG // 4:
            self.backlog_paused = False
            self._update_reading()
        self._maybe_finish()

    def _write(self, data):
        if not self.lost and not self.transport.is_closing():
            self.transport.write(data)
            stats["bytes_out"] += len(data)

    def _update_reading(self):
        if self.lost or self.eof:
            return
        if self.write_paused or self.backlog_paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _maybe_finish(self):
        if self.eof and not self.finished and not self.backlog and \
                not self.lost and not self.transport.is_closing():
            self.finished = True
            # Both halves are done: half-close (the client reads to EOF),
            # then close; a half-closed transport nobody reads or writes
            # would never learn that the client went away.
            try:
                self.transport.write_eof()
            except OSError:
                stats["write_eof_failed"] += 1  # it failed meanwhile
            self.transport.close()

    def pause_writing(self):
        self.write_paused = True
        self._update_reading()

    def resume_writing(self):
        self.write_paused = False
        self._update_reading()

    def eof_received(self):
        self.eof = True
        self._maybe_finish()
        return True     # stay half-open until the echo is out

    def connection_lost(self, reason):
        self.lost = True
        self.backlog.clear()
        stats["open"] -= 1
        stats["lost_clean" if reason is None else "lost_error"] += 1


def main():
    listener = reactor.listen_tcp(0, Echo, host="127.0.0.1", backlog=512)
    expected = [time.monotonic() + TICK]

    def tick():
        now = time.monotonic()
        lateness.append(now - expected[0])
        expected[0] = now + TICK
        reactor.call_later(TICK, tick)
    reactor.call_later(TICK, tick)
    reactor.add_signal_handler(signal.SIGTERM, reactor.stop)
    print("PORT", listener.port, flush=True)
    reactor.run()
    listener.close()
    lat = sorted(lateness) or [0.0]
    out = dict(stats)
    out.update(
        ticks=len(lat),
        late_p50_ms=round(lat[len(lat) // 2] * 1e3, 3),
        late_p99_ms=round(lat[min(len(lat) - 1, len(lat) * 99 // 100)] *
                          1e3, 3),
        late_max_ms=round(lat[-1] * 1e3, 3))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
