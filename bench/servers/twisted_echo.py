"""Echo server on Twisted's epollreactor.

usage: twisted_echo.py PORT

Listens on 127.0.0.1:PORT, sets TCP_NODELAY on each connection (Twisted
leaves it off by default; every peer here runs with it on) and writes back
whatever arrives. Twisted's own signal handlers stop the reactor on SIGTERM
and SIGINT.
"""

import sys

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import protocol, reactor  # noqa: E402  (after install)


class Echo(protocol.Protocol):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self.transport.write(data)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: twisted_echo.py PORT")
    reactor.listenTCP(int(sys.argv[1]), protocol.Factory.forProtocol(Echo),
                      backlog=1024, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
