"""The line-based chat server of chat_streams.py on LineReceiver
(Twisted's style, in snake_case); the lines are split in C.

    python3 examples/python/chat_lines.py [PORT]     (default 8002)

    nc 127.0.0.1 8002      (in two terminals; type lines)
"""

import signal
import sys

import twincore


class Chat(twincore.LineReceiver):
    delimiter = b"\n"
    max_length = 4096          # a longer line ends the connection

    def __init__(self, clients):
        self.clients = clients
        self.name = None

    def connection_made(self, transport):
        super().connection_made(transport)
        self.transport.write(b"name? ")

    def line_received(self, line):
        if self.name is None:
            self.name = line.strip() or b"anonymous"
            self.clients.add(self)
            self.broadcast(b"* %s joined" % self.name)
        else:
            self.broadcast(b"%s: %s" % (self.name, line))

    def connection_lost(self, reason):
        if self in self.clients:
            self.clients.discard(self)
            self.broadcast(b"* %s left" % self.name)

    def broadcast(self, text):
        for other in list(self.clients):
            if other is self:
                continue
            if other.transport.get_write_buffer_size() > 1024 * 1024:
                other.transport.abort()   # it stopped reading
                continue
            other.send_line(text)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8002
    reactor = twincore.reactor
    clients = set()
    listener = reactor.listen_tcp(port, twincore.Factory(Chat, clients))
    reactor.add_signal_handler(signal.SIGTERM, reactor.stop)
    print(f"chat_lines: listening on 127.0.0.1:{listener.port}", flush=True)
    try:
        reactor.run()
    except KeyboardInterrupt:
        pass
    listener.close()


if __name__ == "__main__":
    main()
