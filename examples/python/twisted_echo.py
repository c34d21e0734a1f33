"""Twisted's own line echo server, unchanged, on twincore's reactor.

    PYTHONPATH=build/pymod /usr/bin/python3 examples/python/twisted_echo.py [PORT]

Listens on 127.0.0.1 (default port 8000) and echoes every line back. The
only twincore line is install(), before anything imports
twisted.internet.reactor; the same program runs as a twistd plugin with
`twistd --reactor=twincore`. The "hash" command shows deferToCpu: the
SHA-256 of the rest of the line is computed on twincore's CPU pool (native
threads) and comes back as a Deferred. Ctrl-C or SIGTERM stops it.
"""

import hashlib
import sys

from twincore.twisted import deferToCpu, install

install()

from twisted.internet import protocol, reactor  # noqa: E402  (after install)
from twisted.protocols import basic              # noqa: E402


class LineEcho(basic.LineReceiver):
    delimiter = b"\n"

    def lineReceived(self, line):
        if line.startswith(b"hash "):
            d = deferToCpu(lambda data: hashlib.sha256(data).hexdigest(),
                           line[5:])
            d.addCallback(lambda digest: self.sendLine(digest.encode()))
            return
        self.sendLine(line)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    listening = reactor.listenTCP(port,
                                  protocol.Factory.forProtocol(LineEcho),
                                  interface="127.0.0.1")
    print(f"echoing lines on 127.0.0.1:{listening.getHost().port} "
          f"({type(reactor).__name__})", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
