"""A first end-to-end check: echo over TCP on one reactor."""

import twincore
from conftest import RecordingProtocol, run_until


class Echo(twincore.Protocol):
    def data_received(self, data):
        self.transport.write(data)


def test_tcp_echo_roundtrip(reactor):
    listener = reactor.listen_tcp(0, Echo)
    payload = bytes(range(256)) * 400

    async def main():
        client = await reactor.connect_tcp("127.0.0.1", listener.port,
                                           RecordingProtocol)
        client.transport.write(payload)
        while len(client.data) < len(payload):
            await twincore.sleep(0.001, reactor=reactor)
        client.transport.close()
        await client.done
        return client

    client = run_until(reactor, main())
    assert bytes(client.data) == payload
    assert client.events == ["made", "data", "lost"]
    assert client.lost is None
    listener.close()
