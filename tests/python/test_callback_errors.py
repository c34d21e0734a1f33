"""The suite's own guard (conftest.py): an exception that escapes a reactor
callback fails the test that caused it, even though the reactor itself
only logs it and carries on."""

import pathlib

pytest_plugins = ["pytester"]

CONFTEST = (pathlib.Path(__file__).parent / "conftest.py").read_text()


def run_inner(pytester, body):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=body)
    return pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")


def test_assert_in_data_received_fails_the_test(pytester):
    result = run_inner(pytester, '''
import twincore
from conftest import run_until


class Checker(twincore.Protocol):
    def data_received(self, data):
        assert data == b"never this", "checked inside the callback"
        self.transport.close()


def test_inner(reactor):
    listener = reactor.listen_tcp(0, Checker)

    async def main():
        client = await reactor.connect_tcp("127.0.0.1", listener.port,
                                           twincore.Protocol)
        client.transport.write(b"ping")
        await twincore.sleep(0.2, reactor=reactor)
        client.transport.close()
        listener.close()
    run_until(reactor, main())
''')
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*checked inside the callback*"])


def test_timer_exception_fails_the_test(pytester):
    result = run_inner(pytester, '''
from conftest import run_until
import twincore


def test_inner(reactor):
    def boom():
        raise RuntimeError("from a timer")
    reactor.call_later(0.001, boom)
    run_until(reactor, twincore.sleep(0.05, reactor=reactor))
''')
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*from a timer*"])


def test_marked_test_may_provoke_errors(pytester):
    result = run_inner(pytester, '''
import pytest
from conftest import run_until
import twincore


@pytest.mark.callback_errors
def test_inner(reactor, caplog):
    reactor.call_soon(lambda: 1 / 0)
    run_until(reactor, twincore.sleep(0.01, reactor=reactor))
    assert "ZeroDivisionError" in caplog.text
''')
    result.assert_outcomes(passed=1)


def test_clean_test_passes(pytester):
    result = run_inner(pytester, '''
from conftest import run_until
import twincore


def test_inner(reactor):
    run_until(reactor, twincore.sleep(0.01, reactor=reactor))
''')
    result.assert_outcomes(passed=1)
