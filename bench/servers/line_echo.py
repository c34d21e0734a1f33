"""Line echo servers: one line in, the same line out (issue 18).

usage: line_echo.py KIND PORT

KIND is one of
  twincore-streams   twincore.start_server, `async for line in reader`,
                     write + await drain()
  asyncio-streams    the same code on asyncio.start_server
  uvloop-streams     the same code on uvloop's loop
  twincore-lines     twincore.LineReceiver (the split in C), send_line
  twisted-lines      Twisted's LineReceiver on epollreactor, sendLine

Listens on 127.0.0.1:PORT (backlog 1024) until SIGTERM or SIGINT, with
TCP_NODELAY on every connection (asyncio, uvloop and twincore set it
themselves; Twisted is told to). The delimiter is b"\\n"; drive it with
`bench/loadgen --lines`. bench/run.py runs twincore's with PYTHONPATH
pointing at the build's pymod directory.
"""

import signal
import sys


async def stream_handler(reader, writer):
    # The same body for twincore's and asyncio's streams.
    async for line in reader:
        writer.write(line)
        await writer.drain()
    writer.close()


def run_asyncio_streams(port, use_uvloop):
    import asyncio
    if use_uvloop:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def serve():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        server = await asyncio.start_server(stream_handler, "127.0.0.1", port,
                                            backlog=1024)
        async with server:
            await stop.wait()
    asyncio.run(serve())


def run_twincore_streams(port):
    import twincore

    async def serve():
        reactor = twincore.get_running_reactor()
        stop = twincore.Future(reactor)
        for signum in (signal.SIGTERM, signal.SIGINT):
            reactor.add_signal_handler(signum, stop.set_result, None)
        server = await twincore.start_server(stream_handler, port,
                                             backlog=1024)
        await stop
        server.close()
    twincore.run(serve())


def run_twincore_lines(port):
    import twincore

    class Echo(twincore.LineReceiver):
        delimiter = b"\n"

        def line_received(self, line):
            self.send_line(line)

    reactor = twincore.reactor
    listener = reactor.listen_tcp(port, twincore.Factory(Echo),
                                  host="127.0.0.1", backlog=1024)
    for signum in (signal.SIGTERM, signal.SIGINT):
        reactor.add_signal_handler(signum, reactor.stop)
    reactor.run()
    listener.close()


def run_twisted_lines(port):
    from twisted.internet import epollreactor
    epollreactor.install()
    from twisted.internet import protocol, reactor
    from twisted.protocols import basic

    class Echo(basic.LineReceiver):
        delimiter = b"\n"

        def connectionMade(self):
            self.transport.setTcpNoDelay(True)

        def lineReceived(self, line):
            self.sendLine(line)

    reactor.listenTCP(port, protocol.Factory.forProtocol(Echo),
                      backlog=1024, interface="127.0.0.1")
    reactor.run()


def main():
    kinds = {
        "twincore-streams": run_twincore_streams,
        "asyncio-streams": lambda p: run_asyncio_streams(p, False),
        "uvloop-streams": lambda p: run_asyncio_streams(p, True),
        "twincore-lines": run_twincore_lines,
        "twisted-lines": run_twisted_lines,
    }
    if len(sys.argv) != 3 or sys.argv[1] not in kinds:
        sys.exit("usage: line_echo.py {" + ",".join(kinds) + "} PORT")
    kinds[sys.argv[1]](int(sys.argv[2]))


if __name__ == "__main__":
    main()
