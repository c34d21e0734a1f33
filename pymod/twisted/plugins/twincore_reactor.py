"""Twisted's plugin for twincore's reactor: ``twistd --reactor=twincore``
and ``trial --reactor=twincore`` call twincore.twisted.install().

This file lives in a twisted/plugins directory with no __init__.py, beside
the twincore package (in build/pymod and in site-packages), which Twisted
adds to twisted.plugins' search path."""

from twisted.application.reactors import Reactor

twincore = Reactor(
    "twincore", "twincore.twisted",
    "twincore's C event loop (libev, epoll) with its CPU pool")
