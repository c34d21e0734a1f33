"""Echo server on asyncio's default event loop and its Protocol API.

usage: asyncio_echo.py PORT [--tls CERT KEY]

Listens on 127.0.0.1:PORT and writes back whatever arrives, until SIGTERM or
SIGINT. asyncio sets TCP_NODELAY on TCP transports itself. uvloop_echo.py
runs this same code on uvloop. --tls serves TLS with the given certificate
chain and key (for bench/loadgen --tls).
"""

import argparse
import asyncio
import signal
import ssl


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def serve(port, ssl_context):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(
        EchoProtocol, "127.0.0.1", port, backlog=1024, reuse_address=True,
        ssl=ssl_context)
    async with server:
        await stop.wait()


def parse_args(prog):
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("port", type=int)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*args.tls)
    return args.port, context


def main(prog="asyncio_echo.py"):
    port, context = parse_args(prog)
    asyncio.run(serve(port, context))


if __name__ == "__main__":
    main()
