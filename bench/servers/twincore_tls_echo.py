"""TLS echo server on twincore's reactor: twincore_echo.py's protocol over
Reactor.listen_tls.

usage: twincore_tls_echo.py PORT CERT KEY

The handshake and the record encryption run in C on the loop thread without
the GIL; the Python protocol only sees plaintext. The peers to compare with
are asyncio_echo.py / uvloop_echo.py with --tls CERT KEY (Python's ssl).
Run with PYTHONPATH pointing at the build's pymod directory.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twincore  # noqa: E402
from twincore_echo import Echo  # noqa: E402


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: twincore_tls_echo.py PORT CERT KEY")
    context = twincore.TLSContext(server_side=True, certfile=sys.argv[2],
                                  keyfile=sys.argv[3])
    reactor = twincore.reactor
    listener = reactor.listen_tls(int(sys.argv[1]), twincore.Factory(Echo),
                                  context, host="127.0.0.1", backlog=1024)
    for signum in (signal.SIGTERM, signal.SIGINT):
        reactor.add_signal_handler(signum, reactor.stop)
    reactor.run()
    listener.close()


if __name__ == "__main__":
    main()
