"""Echo server on uvloop: asyncio_echo.py's protocol on uvloop's loop.

usage: uvloop_echo.py PORT [--tls CERT KEY]

uvloop sets TCP_NODELAY on TCP transports itself. The reference peer for
the network ratios in bench/results.
"""

import asyncio
import os
import sys

import uvloop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asyncio_echo  # noqa: E402  (found through the path set just above)

if __name__ == "__main__":
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio_echo.main("uvloop_echo.py")
