"""A line-based chat server on twincore streams (asyncio's API).

    python3 examples/python/chat_streams.py [PORT]     (default 8001)

    nc 127.0.0.1 8001      (in two terminals; type lines)

Each client sends its name first, then lines; every line goes to every
other client as "name: line". A client that does not read is not waited
for: its writer's buffer grows up to the transport's high watermark, and
then it is disconnected rather than slowing the others down.
"""

import signal
import sys

import twincore

clients = {}   # StreamWriter -> name


def broadcast(sender, text):
    for writer in list(clients):
        if writer is sender:
            continue
        if writer.transport.get_write_buffer_size() > 1024 * 1024:
            writer.transport.abort()   # a client that stopped reading
            continue
        writer.write(text)


async def handle(reader, writer):
    writer.write(b"name? ")
    name = (await reader.readline()).strip() or b"anonymous"
    clients[writer] = name
    broadcast(writer, b"* %s joined\n" % name)
    try:
        async for line in reader:
            broadcast(writer, b"%s: %s" % (name, line))
    except (ConnectionError, ValueError):   # reset, or a line over limit
        pass
    finally:
        del clients[writer]
        broadcast(writer, b"* %s left\n" % name)
        writer.close()


async def main(port):
    reactor = twincore.get_running_reactor()
    server = await twincore.start_server(handle, port)
    print(f"chat_streams: listening on 127.0.0.1:{server.port}", flush=True)
    stop = twincore.Future(reactor)
    reactor.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop
    server.close()


if __name__ == "__main__":
    try:
        twincore.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8001))
    except KeyboardInterrupt:
        pass
