"""Sending a 1 GiB file to a local reader: Transport.sendfile (sendfile(2),
no copy) against a read/write loop on the same reactor (file.readinto a
256 KiB buffer, transport.write, paused by pause_writing until
resume_writing), alternating rounds.  The reader is a separate process
draining a Unix socket with recv_into into one 1 MiB buffer, so it never
competes for this process's GIL.  A Unix socket, not loopback TCP: on
this kind of machine loopback TCP's own per-packet work bounds both
modes alike (a raw C sendfile loop there beats read/write by only
1.2-1.3x), which hides what the sender saves.  The file lives in /tmp and is read once first, so
both sides read it from the page cache.  Prints one line per round and
the medians in MiB/s.

usage: PYTHONPATH=build/pymod /usr/bin/python3 bench/sendfile/sendfile_1g.py
       [--rounds N] [--size-mib N]

Bounded: --rounds (3) x 2 transfers of --size-mib (1024); a transfer that
takes over 60 s stops the run.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import twincore

READER = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
print("ready", flush=True)
buf = bytearray(1 << 20)
while True:
    c, _ = s.accept()
    total = 0
    while True:
        n = c.recv_into(buf)
        if n == 0:
            break
        total += n
    c.sendall(str(total).encode())
    c.close()
"""

CHUNK = 256 * 1024


def transfer(sock_path, path, size, mode):
    """One connection; returns (seconds, bytes the reader counted)."""
    reactor = twincore.Reactor()
    result = {}

    class Sender(twincore.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.t0 = time.perf_counter()
            self.f = open(path, "rb", buffering=0)
            self.reply = b""
            if mode == "sendfile":
                fut = transport.sendfile(self.f, 0, size)
                fut.add_done_callback(lambda _: self.finish())
            else:
                self.buf = bytearray(CHUNK)
                self.sent = 0
                self.paused = False
                self.pump()

        def pump(self):
            while not self.paused and self.sent < size:
                n = self.f.readinto(self.buf)
                if n == 0:
                    break
                self.transport.write(bytes(memoryview(self.buf)[:n]))
                self.sent += n
            if self.sent >= size and not self.paused:
                self.finish()

        def pause_writing(self):
            self.paused = True

        def resume_writing(self):
            self.paused = False
            self.pump()

        def finish(self):
            if "sent" not in result:
                result["sent"] = True
                self.transport.write_eof()

        def data_received(self, data):
            self.reply += data

        def eof_received(self):
            result["seconds"] = time.perf_counter() - self.t0
            result["counted"] = int(self.reply)
            self.f.close()
            reactor.stop()

    fut = reactor.connect_unix(sock_path, twincore.Factory(Sender))
    guard = reactor.call_later(60, reactor.stop)
    reactor.run()
    guard.cancel()
    proto = fut.result()
    proto.transport.abort()
    reactor.close()
    if "seconds" not in result:
        sys.exit(f"{mode}: no answer within 60 s")
    return result["seconds"], result["counted"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    size = args.size_mib * 1024 * 1024
    fd, path = tempfile.mkstemp(prefix="tc-sendfile-bench-", dir="/tmp")
    sock_path = path + ".sock"
    reader = subprocess.Popen([sys.executable, "-c", READER, sock_path],
                              stdout=subprocess.PIPE)
    try:
        block = os.urandom(1 << 20)
        with os.fdopen(fd, "wb") as f:
            for _ in range(args.size_mib):
                f.write(block)
        with open(path, "rb") as f:   # into the page cache
            while f.read(1 << 24):
                pass
        assert reader.stdout.readline() == b"ready\n"
        rates = {"sendfile": [], "read/write": []}
        for r in range(args.rounds):
            for mode in ("sendfile", "read/write"):
                secs, counted = transfer(sock_path, path, size, mode)
                assert counted == size, (mode, counted, size)
                rate = size / secs / (1 << 20)
                rates[mode].append(rate)
                print(f"round {r + 1}: {mode:10s} {args.size_mib} MiB in "
                      f"{secs:6.2f} s = {rate:7.0f} MiB/s", flush=True)
        sf = statistics.median(rates["sendfile"])
        rw = statistics.median(rates["read/write"])
        print(f"median: sendfile {sf:.0f} MiB/s, read/write {rw:.0f} MiB/s; "
              f"ratio {sf / rw:.2f}")
    finally:
        reader.kill()
        reader.wait()
        os.unlink(path)
        if os.path.exists(sock_path):
            os.unlink(sock_path)


if __name__ == "__main__":
    main()
