"""Twisted's echo server on twincore's reactor (twincore.twisted): the same
program as twisted_echo.py with one change, the reactor it installs.

usage: twisted_twincore_echo.py PORT [--native]   (PYTHONPATH=BUILD/pymod)

--native: install(native_tcp=True), twincore's C transports behind
Twisted's ITCPTransport (the opt-in fast path).

Twisted's own TCP transports run on twincore's loop (its descriptor
watchers and bounded iteration); TCP_NODELAY on each connection, as every
peer here. Twisted's signal handlers stop the reactor on SIGTERM/SIGINT.
"""

import sys

from twincore.twisted import install

install(native_tcp="--native" in sys.argv[2:])

from twisted.internet import protocol, reactor  # noqa: E402  (after install)


class Echo(protocol.Protocol):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self.transport.write(data)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: twisted_twincore_echo.py PORT [--native]")
    reactor.listenTCP(int(sys.argv[1]), protocol.Factory.forProtocol(Echo),
                      backlog=1024, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
