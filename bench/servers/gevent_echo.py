"""Echo server on gevent's StreamServer, one greenlet per connection.

usage: gevent_echo.py PORT

Listens on 127.0.0.1:PORT, sets TCP_NODELAY on each connection (gevent
leaves it off by default; every peer here runs with it on) and writes back
whatever arrives, until SIGTERM or SIGINT.
"""

import signal
import socket
import sys

import gevent
from gevent.server import StreamServer


def echo(sock, address):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv = sock.recv
    sendall = sock.sendall
    try:
        while True:
            data = recv(65536)
            if not data:
                break
            sendall(data)
    except OSError:
        pass    # The load generator resets its connections when it is done.
    finally:
        sock.close()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gevent_echo.py PORT")
    server = StreamServer(("127.0.0.1", int(sys.argv[1])), echo, backlog=1024)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop, 1.0)
    server.serve_forever()


if __name__ == "__main__":
    main()
