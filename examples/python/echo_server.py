"""An echo server on twincore's reactor.

    python3 examples/python/echo_server.py [PORT]     (default 8000)

Listens on 127.0.0.1; every byte a client sends comes back. When a client
does not read, the transport's write buffer passes its high watermark and
the protocol pauses reading from it until the buffer drains. Runs until
SIGTERM or Ctrl-C. TCP_NODELAY is on, as is the reactor's default.
"""

import signal
import sys

import twincore


class Echo(twincore.Protocol):
    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()     # backpressure: stop reading

    def resume_writing(self):
        self.transport.resume_reading()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    reactor = twincore.reactor
    listener = reactor.listen_tcp(port, twincore.Factory(Echo))
    reactor.add_signal_handler(signal.SIGTERM, reactor.stop)
    print(f"echo_server: listening on 127.0.0.1:{listener.port}", flush=True)
    try:
        reactor.run()
    except KeyboardInterrupt:
        pass
    listener.close()


if __name__ == "__main__":
    main()
