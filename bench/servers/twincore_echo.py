"""Echo server on twincore's reactor: a twincore.Protocol in Python.

usage: twincore_echo.py PORT

Listens on 127.0.0.1:PORT with a backlog of 1024 and writes back whatever
arrives, until SIGTERM or SIGINT. Like the other servers, it keeps what the
socket does not take (the transport buffers it) and stops reading from a
connection while its write buffer is above the high watermark. The reactor
sets TCP_NODELAY on every connection itself. bench/run.py runs it with
PYTHONPATH pointing at the build's pymod directory.
"""

import signal
import sys

import twincore


class Echo(twincore.Protocol):
    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: twincore_echo.py PORT")
    reactor = twincore.reactor
    listener = reactor.listen_tcp(int(sys.argv[1]), twincore.Factory(Echo),
                                  host="127.0.0.1", backlog=1024)
    for signum in (signal.SIGTERM, signal.SIGINT):
        reactor.add_signal_handler(signum, reactor.stop)
    reactor.run()
    listener.close()


if __name__ == "__main__":
    main()
