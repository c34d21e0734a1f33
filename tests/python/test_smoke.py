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


def test_the_extension_uses_the_public_c_api_only():
    """pymod/ sees include/ only, as any user of the C API (issue 13): no
    tc__ internals, no src/internal.h, no private build macros."""
    import pathlib
    import re
    pymod = pathlib.Path(__file__).resolve().parents[2] / "pymod"
    offenders = []
    for path in sorted(pymod.rglob("*")):
        if path.suffix not in (".c", ".h", ".py"):
            continue
        text = path.read_text()
        for bad in (r"\btc__\w+", r'#include\s+"internal\.h"',
                    r"\bTC_HAVE_TLS\b"):
            for m in re.finditer(bad, text):
                offenders.append(f"{path.relative_to(pymod)}: {m.group(0)}")
    assert offenders == []


def test_events_carry_their_handler():
    """A kind of event is one file (issue 13): each event carries its
    owner's table, each sub-kind (PYEV_*) is known to its owner's .c/.h
    only, and the dispatcher names no kind and calls no owner."""
    import pathlib
    import re
    src = pathlib.Path(__file__).resolve().parents[2] / "pymod" / "_twincore"
    owners = {}
    for path in sorted(src.glob("*.[ch]")):
        for name in re.findall(r"\bPYEV_\w+", path.read_text()):
            owners.setdefault(name, set()).add(path.stem)
    assert "PYEV_DATA" in owners
    assert {n: sorted(o) for n, o in owners.items() if len(o) > 1} == {}
    for name in ("dispatch.c", "dispatch.h"):
        text = (src / name).read_text()
        assert re.findall(r"\bPYEV_\w+|\b\w+_dispatch\(", text) == []
