"""A line-protocol service that hashes each request, showing why CPU work
belongs off the event loop.

    python3 examples/python/hash_service.py [--port PORT] [--mode MODE]
        [--iterations N]

Each request is one line; the reply is one line:
    PING               -> PONG                  (answered at once)
    anything else      -> hex PBKDF2-SHA256 of the line, N iterations

--mode offload (default) hashes with twincore.defer_to_cpu: the loop stays
free and hashlib releases the GIL, so every core hashes. --mode inline
hashes on the loop thread: every other client, PINGs included, waits.
Replies keep the order of each connection's requests.
"""

import argparse
import hashlib
import signal
from collections import deque

import twincore

SALT = b"twincore-demo"


def pbkdf2(line, iterations):
    return hashlib.pbkdf2_hmac("sha256", line, SALT, iterations).hex()


class HashProtocol(twincore.Protocol):
    def __init__(self, mode, iterations):
        self.mode = mode
        self.iterations = iterations
        self.buf = b""
        self.replies = deque()     # Futures (or strings), in request order

    def data_received(self, data):
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self.handle(line.rstrip(b"\r"))

    def handle(self, line):
        if line == b"PING":
            self.replies.append("PONG")
        elif self.mode == "inline":
            self.replies.append(pbkdf2(line, self.iterations))
        else:
            fut = twincore.defer_to_cpu(pbkdf2, line, self.iterations)
            fut.add_done_callback(lambda _: self.flush())
            self.replies.append(fut)
        self.flush()

    def flush(self):
        out = []
        while self.replies:
            head = self.replies[0]
            if isinstance(head, twincore.Future):
                if not head.done():
                    break
                try:
                    head = head.result()
                except Exception as exc:
                    head = f"ERROR {type(exc).__name__}"
            self.replies.popleft()
            out.append(head.encode() + b"\n")
        if out and not self.transport.is_closing():
            self.transport.writelines(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--mode", choices=["offload", "inline"],
                    default="offload")
    ap.add_argument("--iterations", type=int, default=20000)
    args = ap.parse_args()
    if args.iterations <= 0:
        ap.error("--iterations must be > 0")
    reactor = twincore.reactor
    factory = twincore.Factory(HashProtocol, args.mode, args.iterations)
    listener = reactor.listen_tcp(args.port, factory)
    reactor.add_signal_handler(signal.SIGTERM, reactor.stop)
    print(f"hash_service: {args.mode} mode on 127.0.0.1:{listener.port}, "
          f"{reactor.cpu_pool.workers} CPU workers", flush=True)
    try:
        reactor.run()
    except KeyboardInterrupt:
        pass
    listener.close()


if __name__ == "__main__":
    main()
