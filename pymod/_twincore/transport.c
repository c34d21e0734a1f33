/* Transport (a TCP or Unix connection) and Listener.
 *
 * Ownership: the C stream's handle data holds a strong reference to its
 * Transport until the close callback's PYEV_CLOSED is dispatched, so a
 * connection lives while it is open even if Python drops every reference.
 * That reference is listed on the reactor (reactor_hold), which shows it
 * to the GC and takes it back when the reactor closes: the detach
 * functions then empty the handle's data, so the C callbacks below find
 * no object and do nothing.  A Listener is held the same way.
 * Writes are buffered in outbuf under the GIL and handed to the stream by
 * transport_flush() after the batch, without the GIL: many writes of one
 * iteration become one send.
 *
 * The protocol contract (Twisted's, asyncio's): .transport is set before
 * connection_made; after close()/abort() (or the close that follows EOF)
 * no data_received/eof_received reaches the protocol; a protocol method
 * that raises (but connection_lost) aborts the connection, whose
 * connection_lost gets that exception; connection_lost comes exactly once,
 * also when the reactor is closed.  write() raises BrokenPipeError only
 * after the program's own close()/abort()/write_eof(); writes after the
 * connection was lost otherwise are dropped, as asyncio and Twisted do. */
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dispatch.h"
#include "errors.h"
#include "framing.h"
#include "future.h"
#include "module.h"
#include "reactor.h"
#include "tls.h"
#include "transport.h"

#define DEFAULT_HIGH (64u * 1024u)

/* The events this file queues (dispatch.h): a Transport's (obj) and a
 * Listener's (obj) of these kinds, and a sendfile's completion. */
enum {
    PYEV_DATA = 1,     /* its inbuf holds the bytes */
    PYEV_EOF,
    PYEV_CLOSED,       /* the C handle is gone */
    PYEV_PAUSE,
    PYEV_RESUME,
    PYEV_CONNECTED,    /* status */
    PYEV_ACCEPT,       /* ptr: tc_stream_t*; status */
    PYEV_ACCEPT_ERROR, /* status */
    PYEV_LISTENER_CLOSED,
};
static const pyevent_ops_t transport_ops;   /* beside transport_dispatch() */
static const pyevent_ops_t listener_ops;    /* beside listener_dispatch() */
static const pyevent_ops_t sendfile_ops;    /* beside sendfile_dispatch() */

static inline bool
is_open(TransportObject *t)
{
    return t->stream != NULL && !t->closing;
}

static inline size_t
pending_writes(TransportObject *t)
{
    return t->outbuf.len +
           (t->stream != NULL ? tc_stream_write_queue_size(t->stream) : 0);
}

/* ---- C callbacks: GIL none, loop thread; they only queue ---------------- */

static void
t_on_read(tc_stream_t *s, const char *buf, size_t len)
{
    TransportObject *t = tc_handle_data(tc_stream_handle(s));
    if (t == NULL || t->input_done) {
        return;
    }
    if (bytebuf_append(&t->inbuf, buf, len) != 0) {
        t->error = -ENOMEM;
        tc_stream_abort(s, NULL);
        return;
    }
    if (!t->data_queued) {
        t->data_queued = true;
        pyevents_push(t->reactor, &transport_ops, PYEV_DATA, (PyObject *)t,
                      NULL, 0);
    }
}

static void
t_on_eof(tc_stream_t *s)
{
    TransportObject *t = tc_handle_data(tc_stream_handle(s));
    if (t == NULL) {
        return;
    }
    t->eof = true;
    if (!t->input_done) {
        pyevents_push(t->reactor, &transport_ops, PYEV_EOF, (PyObject *)t,
                      NULL, 0);
    }
}

static void
t_on_closed(tc_handle_t *h)
{
    TransportObject *t = tc_handle_data(h);
    if (t == NULL) {
        return;
    }
    t->stream = NULL;
    pyevents_push(t->reactor, &transport_ops, PYEV_CLOSED, (PyObject *)t,
                  NULL, 0);
}

static void
t_on_error(tc_stream_t *s, int status)
{
    TransportObject *t = tc_handle_data(tc_stream_handle(s));
    if (t == NULL) {
        tc_close(tc_stream_handle(s), NULL);
        return;
    }
    if (t->error == 0) {
        t->error = status;
    }
    t->closing = true;
    tc_close(tc_stream_handle(s), t_on_closed);
}

static void
t_on_flow(tc_stream_t *s, bool paused)
{
    TransportObject *t = tc_handle_data(tc_stream_handle(s));
    if (t == NULL) {
        return;
    }
    pyevents_push(t->reactor, &transport_ops,
                  paused ? PYEV_PAUSE : PYEV_RESUME, (PyObject *)t, NULL, 0);
}

const tc_stream_callbacks_t transport_callbacks = {
    .on_read = t_on_read,
    .on_eof = t_on_eof,
    .on_error = t_on_error,
    .on_flow = t_on_flow,
};

void
transport_on_connect(tc_stream_t *s, int status)
{
    TransportObject *t = tc_handle_data(tc_stream_handle(s));
    if (t == NULL) {
        return;   /* closed before its Transport existed */
    }
    pyevents_push(t->reactor, &transport_ops, PYEV_CONNECTED, (PyObject *)t,
                  NULL, status);
}

/* GIL: none.  The protocol was told pause_writing(): make sure something
 * reports the drain to the low watermark.  The stream itself reports only
 * when it had passed its own high watermark, which the bytes still in the
 * socket's queue may not have; lowering its high watermark to the low one
 * makes it pause now and call back at the low watermark. */
static void
expect_drain(TransportObject *t)
{
    if (tc_stream_write_queue_size(t->stream) <= t->low_water) {
        pyevents_push(t->reactor, &transport_ops, PYEV_RESUME, (PyObject *)t,
                      NULL, 0);
    } else {
        tc_stream_set_watermarks(t->stream, t->low_water, t->low_water);
    }
}

/* GIL: none.  Hand outbuf to the stream. */
void
transport_flush(TransportObject *t)
{
    if (t->outbuf.len == 0) {
        return;
    }
    if (t->stream != NULL) {
        /* A failure is reported through on_error -> connection_lost. */
        tc_stream_write(t->stream, t->outbuf.data, t->outbuf.len);
        if (t->writing_paused) {
            expect_drain(t);
        }
    }
    t->outbuf.len = 0;
    if (t->outbuf.cap > 1024 * 1024) {
        bytebuf_free(&t->outbuf);   /* don't keep a burst's memory */
    }
}

/* ---- construction -------------------------------------------------------- */

/* loopref_t.detach: the reactor closes; the stream goes with it. */
static void
transport_detach(PyObject *obj)
{
    TransportObject *t = (TransportObject *)obj;
    /* The reason transport_reactor_closed() gives: an open connection, or
     * a close() that had not sent everything yet, is cut short. */
    bool flushed = t->stream == NULL ||
                   tc_handle_is_closing(tc_stream_handle(t->stream)) ||
                   pending_writes(t) == 0;
    if (t->error == 0 && (!t->closing || !flushed)) {
        t->error = -ECONNABORTED;
    }
    if (t->stream != NULL) {
        tc_handle_t *h = tc_stream_handle(t->stream);
        tc_handle_set_data(h, NULL);
        if (!tc_handle_is_closing(h)) {
            tc_stream_abort(t->stream, NULL);
        }
        t->stream = NULL;
    }
    t->closing = true;
    t->closed = true;
    t->outbuf.len = 0;
    t->inbuf.len = 0;
}

void
transport_reactor_closed(PyObject *obj)
{
    TransportObject *t = (TransportObject *)obj;
    if (t->protocol == NULL) {
        return;   /* told already, or never made */
    }
    tc_state *st = reactor_state(t->reactor);
    PyObject *exc = NULL;
    if (t->failure != NULL) {
        exc = Py_NewRef(t->failure);
    } else if (t->error == -ECONNABORTED) {
        exc = PyObject_CallFunction(PyExc_ConnectionAbortedError, "is",
                                    ECONNABORTED, "the reactor was closed");
    } else if (t->error != 0) {
        exc = tcpy_error_object(st, t->error);
    }
    if (t->error != 0 && exc == NULL) {
        reactor_report(t->reactor, "connection_lost");
    }
    PyObject *proto = t->protocol;
    t->protocol = NULL;
    framing_free(t);
    PyObject *res = PyObject_CallMethodOneArg(proto, st->str_connection_lost,
                                              exc ? exc : Py_None);
    if (res == NULL) {
        reactor_report(t->reactor, "connection_lost");
    }
    Py_XDECREF(res);
    Py_XDECREF(exc);
    Py_DECREF(proto);
    Py_CLEAR(t->failure);
}

PyObject *
transport_new(ReactorObject *r, tc_stream_t *s, bool is_unix)
{
    tc_state *st = reactor_state(r);
    TransportObject *t = PyObject_GC_New(TransportObject, st->Transport_type);
    if (t == NULL) {
        return NULL;
    }
    memset((char *)t + sizeof(PyObject), 0,
           sizeof(TransportObject) - sizeof(PyObject));
    t->reactor = (ReactorObject *)Py_NewRef(r);
    t->stream = s;
    t->is_unix = is_unix;
    t->high_water = DEFAULT_HIGH;
    t->low_water = DEFAULT_HIGH / 4;
    tc_stream_set_watermarks(s, t->low_water, t->high_water);
    tc_stream_set_callbacks(s, &transport_callbacks);
    tc_handle_set_data(tc_stream_handle(s), t);
    reactor_hold(r, &t->held, (PyObject *)t, transport_detach);
    PyObject_GC_Track(t);
    return (PyObject *)t;
}

static PyObject *
address_of(TransportObject *t, bool peer)
{
    PyObject **slot = peer ? &t->peer : &t->host;
    if (*slot != NULL) {
        return Py_NewRef(*slot);
    }
    if (t->stream == NULL) {
        Py_RETURN_NONE;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int err = peer ? tc_stream_peername(t->stream, (struct sockaddr *)&ss,
                                        &len)
                   : tc_stream_sockname(t->stream, (struct sockaddr *)&ss,
                                        &len);
    if (err != 0) {
        Py_RETURN_NONE;
    }
    *slot = tcpy_sockaddr_to_py((struct sockaddr *)&ss, len);
    return Py_XNewRef(*slot);
}

/* ---- dispatch: GIL held ------------------------------------------------- */

/* No more input for the protocol: the program (or the close after EOF)
 * closes the connection. */
static void
stop_input(TransportObject *t)
{
    t->input_done = true;
    t->inbuf.len = 0;
    t->eof_deferred = false;
}

/* GIL: held.  A protocol method raised the current exception: log it and,
 * as Twisted does, drop the connection; connection_lost gets the
 * exception.  KeyboardInterrupt and SystemExit only stop the reactor. */
void
transport_protocol_failed(TransportObject *t, const char *context)
{
    PyObject *exc = tcpy_fetch_exception();
    if (exc == NULL) {
        return;
    }
    bool fatal = PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt) ||
                 PyErr_GivenExceptionMatches(exc, PyExc_SystemExit);
    if (!fatal && t->failure == NULL) {
        t->failure = Py_NewRef(exc);
    }
    tcpy_restore_exception(exc);
    reactor_report(t->reactor, context);
    if (fatal || t->closed) {
        return;
    }
    stop_input(t);
    t->outbuf.len = 0;
    if (t->stream != NULL &&
        !tc_handle_is_closing(tc_stream_handle(t->stream))) {
        /* Also cuts a graceful close short; t_on_closed replaces its
         * callback, so connection_lost still comes once. */
        t->closing = true;
        tc_stream_abort(t->stream, t_on_closed);
    }
}

/* Returns 0, or -1 when the method raised (the connection is aborted). */
static int
call_protocol(TransportObject *t, PyObject *name, PyObject *arg,
              const char *context)
{
    if (t->protocol == NULL) {
        return 0;
    }
    PyObject *res = arg != NULL
                        ? PyObject_CallMethodOneArg(t->protocol, name, arg)
                        : PyObject_CallMethodNoArgs(t->protocol, name);
    if (res == NULL) {
        transport_protocol_failed(t, context);
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

void
transport_queue_data(TransportObject *t)
{
    if (!t->data_queued && !t->closed) {
        t->data_queued = true;
        pyevents_push(t->reactor, &transport_ops, PYEV_DATA, (PyObject *)t,
                      NULL, 0);
        reactor_wake(t->reactor);
    }
}

static void
deliver_data(TransportObject *t)
{
    if (t->inbuf.len == 0 || t->closed || t->input_done ||
        t->protocol == NULL || t->reading_paused) {
        return;
    }
    if (t->framing != NULL) {
        framing_deliver(t);
        /* What is left: a partial frame, or (set_framing(None) in a
         * callback) raw bytes for data_received. */
        if (t->framing != NULL || t->inbuf.len == 0 || t->closed ||
            t->input_done || t->protocol == NULL || t->reading_paused) {
            return;
        }
    }
    PyObject *data = PyBytes_FromStringAndSize(t->inbuf.data,
                                               (Py_ssize_t)t->inbuf.len);
    t->inbuf.len = 0;
    if (t->inbuf.cap > 1024 * 1024) {
        bytebuf_free(&t->inbuf);
    }
    if (data == NULL) {
        reactor_report(t->reactor, "data_received");
        return;
    }
    call_protocol(t, reactor_state(t->reactor)->str_data_received, data,
                  "data_received");
    Py_DECREF(data);
}

static void transport_close_impl(TransportObject *t);

static void
deliver_eof(TransportObject *t)
{
    if (t->closed || t->input_done || t->protocol == NULL) {
        return;
    }
    if (t->data_queued ||
        (t->inbuf.len > 0 && (t->framing == NULL || t->reading_paused))) {
        /* After the paused data, or after bytes queued again (a framing
         * protocol's set_line_mode(extra)): PYEV_DATA or resume_reading()
         * delivers it. */
        t->eof_deferred = true;
        return;
    }
    /* (A partial frame left in framing mode is dropped, as Twisted's.) */
    PyObject *res = PyObject_CallMethodNoArgs(
        t->protocol, reactor_state(t->reactor)->str_eof_received);
    if (res == NULL) {
        transport_protocol_failed(t, "eof_received");
        return;
    }
    int keep_open = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (keep_open < 0) {
        transport_protocol_failed(t, "eof_received");
        return;
    }
    if (!keep_open) {
        stop_input(t);
        transport_close_impl(t);
    }
}

static void
call_on_connect(TransportObject *t, PyObject *protocol, PyObject *exc)
{
    PyObject *cb = t->on_connect;
    t->on_connect = NULL;
    Py_CLEAR(t->factory);
    if (cb == NULL) {
        return;
    }
    PyObject *res = PyObject_CallFunctionObjArgs(
        cb, protocol ? protocol : Py_None, exc ? exc : Py_None, NULL);
    if (res == NULL) {
        reactor_report(t->reactor, "a connect callback");
    }
    Py_XDECREF(res);
    Py_DECREF(cb);
}

/* GIL: held.  Twisted's makeConnection sets .transport before
 * connectionMade: so do we, and .factory when build_protocol left it
 * unset.  A protocol that cannot take the attribute (__slots__, a
 * read-only property) is left alone.  Returns 0, or -1 with another
 * exception set. */
static int
set_protocol_attr(PyObject *proto, const char *name, PyObject *value,
                  bool only_if_none)
{
    if (only_if_none) {
        PyObject *old = PyObject_GetAttrString(proto, name);
        if (old == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                goto failed;
            }
            PyErr_Clear();
        }
        Py_XDECREF(old);
        if (old != NULL && old != Py_None) {
            return 0;
        }
    }
    if (PyObject_SetAttrString(proto, name, value) == 0) {
        return 0;
    }
failed:
    if (PyErr_ExceptionMatches(PyExc_AttributeError) ||
        PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* Build the protocol and announce the connection.  Returns 0, -1 after
 * aborting the connection (the error is logged, no protocol is left), or
 * -2 when connection_made raised (the connection is aborted and
 * connection_lost follows with t->failure). */
static int
start_protocol(TransportObject *t, PyObject *factory)
{
    tc_state *st = reactor_state(t->reactor);
    PyObject *addr = address_of(t, true);
    if (addr == NULL) {
        PyErr_Clear();
        addr = Py_NewRef(Py_None);
    }
    PyObject *proto = PyObject_CallMethodOneArg(factory, st->str_build_protocol,
                                                addr);
    Py_DECREF(addr);
    if (proto == NULL || proto == Py_None) {
        if (proto == NULL) {
            reactor_report(t->reactor, "build_protocol");
        }
        Py_XDECREF(proto);
        t->closing = true;
        if (t->stream != NULL) {
            tc_stream_abort(t->stream, t_on_closed);
        }
        return -1;
    }
    t->protocol = proto;
    tc_stream_read_start(t->stream);
    if (set_protocol_attr(proto, "transport", (PyObject *)t, false) < 0 ||
        set_protocol_attr(proto, "factory", factory, true) < 0) {
        transport_protocol_failed(t, "connection_made");
        return -2;
    }
    if (call_protocol(t, st->str_connection_made, (PyObject *)t,
                      "connection_made") < 0) {
        return -2;
    }
    return 0;
}

/* A failed host-name lookup names the address too; other codes below
 * -3000 (TLS) carry their own detail. */
static bool
is_name_error(int status)
{
    return status == TC_ENONAME || status == TC_EAGAIN_NAME ||
           status == TC_ENAMEFAIL;
}

static void
transport_dispatch(ReactorObject *r, pyevent_t *ev)
{
    TransportObject *t = (TransportObject *)ev->obj;
    tc_state *st = reactor_state(r);
    switch (ev->kind) {
    case PYEV_DATA:
        t->data_queued = false;
        deliver_data(t);
        if (t->eof_deferred && !t->data_queued && !t->reading_paused) {
            t->eof_deferred = false;
            deliver_eof(t);
        }
        break;
    case PYEV_EOF:
        deliver_eof(t);
        break;
    case PYEV_PAUSE:
        if (!t->writing_paused && !t->closed) {
            t->writing_paused = true;
            call_protocol(t, st->str_pause_writing, NULL, "pause_writing");
        }
        break;
    case PYEV_RESUME:
        if (t->writing_paused && !t->closed &&
            pending_writes(t) <= t->low_water) {
            t->writing_paused = false;
            if (t->stream != NULL) {   /* undo expect_drain() */
                tc_stream_set_watermarks(t->stream, t->low_water,
                                         t->high_water);
            }
            call_protocol(t, st->str_resume_writing, NULL, "resume_writing");
        }
        break;
    case PYEV_CONNECTED:
        if (t->stream == NULL) {
            break;   /* closed meanwhile: PYEV_CLOSED reports it */
        }
        if (ev->status != 0) {
            PyObject *exc =
                t->connect_to != NULL &&
                        (ev->status > -3000 || is_name_error(ev->status))
                    ? tcpy_error_at(st, ev->status, "connect to",
                                    t->connect_to)
                    : tls_error_object(st, ev->status, t->stream);
            if (exc == NULL) {
                reactor_report(r, "connect");
            } else if (t->on_connect == NULL) {
                /* A TLS server's handshake: nobody else hears of it. */
                PyObject *peer = address_of(t, true);
                PyObject *res = PyObject_CallMethod(
                    st->logger, "warning", "sOO",
                    "twincore: TLS handshake with %s failed: %s",
                    peer != NULL ? peer : Py_None, exc);
                Py_XDECREF(peer);
                if (res == NULL) {
                    reactor_report(r, "logging");
                }
                Py_XDECREF(res);
            }
            call_on_connect(t, NULL, exc);
            Py_XDECREF(exc);
            t->closing = true;
            tc_close(tc_stream_handle(t->stream), t_on_closed);
            break;
        }
        {
            PyObject *factory = Py_NewRef(t->factory);
            int rc = start_protocol(t, factory);
            Py_DECREF(factory);
            if (rc == 0 || (rc == -2 && t->failure == NULL)) {
                /* (KeyboardInterrupt stops the reactor, nothing else.) */
                call_on_connect(t, t->protocol, NULL);
            } else if (rc == -2) {
                /* connection_made raised: the connect fails with it. */
                call_on_connect(t, NULL, t->failure);
            } else {
                PyObject *exc = PyObject_CallFunction(
                    PyExc_ConnectionAbortedError, "s",
                    "build_protocol() failed or returned None");
                call_on_connect(t, NULL, exc);
                Py_XDECREF(exc);
            }
        }
        break;
    case PYEV_CLOSED: {
        t->closed = true;
        t->closing = true;
        t->inbuf.len = 0;
        PyObject *exc = NULL;
        if (t->failure != NULL) {
            exc = t->failure;   /* what a protocol method raised */
            t->failure = NULL;
        } else if (t->error != 0) {
            exc = t->on_connect != NULL && t->connect_to != NULL
                      ? tcpy_error_at(st, t->error, "connect to",
                                      t->connect_to)
                      : tcpy_error_object(st, t->error);
            if (exc == NULL) {
                reactor_report(r, "connection_lost");
            }
        }
        if (t->on_connect != NULL) {
            PyObject *why = exc != NULL
                                ? Py_NewRef(exc)
                                : PyObject_CallFunction(
                                      PyExc_ConnectionAbortedError, "s",
                                      "closed before the connection was "
                                      "made");
            call_on_connect(t, NULL, why);
            Py_XDECREF(why);
        }
        if (t->protocol != NULL) {
            /* Only logged: the connection is gone already. */
            PyObject *proto = Py_NewRef(t->protocol);
            PyObject *res = PyObject_CallMethodOneArg(
                proto, st->str_connection_lost, exc ? exc : Py_None);
            if (res == NULL) {
                reactor_report(r, "connection_lost");
            }
            Py_XDECREF(res);
            Py_DECREF(proto);
        }
        Py_XDECREF(exc);
        Py_CLEAR(t->protocol);
        Py_CLEAR(t->factory);
        Py_CLEAR(t->on_connect);
        Py_CLEAR(t->connect_to);
        framing_free(t);
        Py_XDECREF(reactor_unhold(r, &t->held));   /* the handle's */
        break;
    }
    default:
        break;
    }
}

static const pyevent_ops_t transport_ops = {
    .run = transport_dispatch,
    .name = "transport",
};

/* ---- Transport methods: GIL held, loop thread ---------------------------- */

#define DROPPED_WRITES_WARNING 5   /* asyncio's threshold */

/* A write to a connection that was lost (not closed by the program) is
 * dropped, as asyncio and Twisted do; a late result for a client that has
 * gone is no error.  Warn once, after several: a program that writes on
 * and on to a dead connection may want to know. */
static void
drop_write(TransportObject *t)
{
    if (++t->dropped_writes != DROPPED_WRITES_WARNING) {
        return;
    }
    PyObject *res = PyObject_CallMethod(
        reactor_state(t->reactor)->logger, "warning", "si",
        "twincore: %d writes to a transport whose connection was lost "
        "were dropped (warned once per transport)",
        DROPPED_WRITES_WARNING);
    if (res == NULL) {
        reactor_report(t->reactor, "logging");
    }
    Py_XDECREF(res);
}

/* May method write?  1 yes; 0 no, drop the data quietly (the connection
 * was lost, not closed by the program); -1 with BrokenPipeError after the
 * program's own close(), abort() or write_eof(), or RuntimeError. */
static int
check_writable(TransportObject *t, const char *method)
{
    if (reactor_check_thread(t->reactor) < 0) {
        return -1;
    }
    if (t->write_eof || t->user_closed) {
        PyErr_Format(PyExc_BrokenPipeError,
                     "%s(): the transport is %s", method,
                     t->write_eof ? "shut down for writing" : "closed");
        return -1;
    }
    if (!is_open(t)) {
        drop_write(t);
        return 0;
    }
    return 1;
}

/* Bytes went into outbuf: schedule the flush, and tell the protocol when
 * they pass the high watermark. */
static void
wrote(TransportObject *t)
{
    reactor_mark_dirty(t->reactor, t);
    reactor_wake(t->reactor);
    if (!t->writing_paused && pending_writes(t) > t->high_water) {
        t->writing_paused = true;
        call_protocol(t, reactor_state(t->reactor)->str_pause_writing, NULL,
                      "pause_writing");
    }
}

/* write() of checked data: 0, or -1 with an exception. */
static int
write_checked(TransportObject *t, const char *buf, Py_ssize_t len)
{
    int rc = check_writable(t, "write");
    if (rc <= 0 || len == 0) {
        return rc < 0 ? -1 : 0;
    }
    if (bytebuf_append(&t->outbuf, buf, (size_t)len) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    wrote(t);
    return 0;
}

int
transport_write_two(TransportObject *t, const char *a, size_t alen,
                    const char *b, size_t blen)
{
    int rc = check_writable(t, "write");
    if (rc <= 0) {
        return rc;
    }
    size_t before = t->outbuf.len;
    if (bytebuf_append(&t->outbuf, a, alen) != 0 ||
        bytebuf_append(&t->outbuf, b, blen) != 0) {
        t->outbuf.len = before;
        PyErr_NoMemory();
        return -1;
    }
    wrote(t);
    return 0;
}

static PyObject *
Transport_write(TransportObject *t, PyObject *data)
{
    if (PyBytes_CheckExact(data)) {
        if (write_checked(t, PyBytes_AS_STRING(data),
                          PyBytes_GET_SIZE(data)) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "write(): 'data' must be a bytes-like object, got "
                     "%.100s", Py_TYPE(data)->tp_name);
        return NULL;
    }
    int rc = write_checked(t, view.buf, view.len);
    PyBuffer_Release(&view);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- sendfile -------------------------------------------------------- */

/* One Transport.sendfile() on its way: created with the GIL, completed
 * by the stream without it (status, sent), settled by dispatch. */
typedef struct sendfile_req {
    ReactorObject *reactor;     /* strong */
    PyObject *future;           /* strong */
    PyObject *file;             /* strong; NULL for a bare descriptor */
    int fd;                     /* our duplicate, closed when done */
    uint64_t offset;
    int status;
    uint64_t sent;
} sendfile_req_t;

static void
sendfile_free(sendfile_req_t *req)
{
    if (req->fd >= 0) {
        close(req->fd);
    }
    Py_XDECREF(req->future);
    Py_XDECREF(req->file);
    Py_XDECREF(req->reactor);
    PyMem_RawFree(req);
}

/* GIL: none.  The stream finished (or dropped) the file range. */
static void
t_sendfile_done(tc_stream_t *s, void *ctx, int status, uint64_t sent)
{
    (void)s;
    sendfile_req_t *req = ctx;
    req->status = status;
    req->sent = sent;
    pyevents_push(req->reactor, &sendfile_ops, 0, NULL, req, status);
}

/* ptr: the sendfile_req_t, owned. */
static void
sendfile_discard(ReactorObject *r, pyevent_t *ev)
{
    (void)r;
    sendfile_free(ev->ptr);
}

static void
sendfile_dispatch(ReactorObject *r, pyevent_t *ev)
{
    sendfile_req_t *req = ev->ptr;
    tc_state *st = reactor_state(r);
    if (req->file != NULL) {
        /* As asyncio's sendfile: the file position ends after the range. */
        PyObject *res = PyObject_CallMethod(
            req->file, "seek", "K",
            (unsigned long long)(req->offset + req->sent));
        if (res == NULL) {
            PyErr_Clear();   /* closed meanwhile: nothing to move */
        }
        Py_XDECREF(res);
    }
    if (future_is_pending(req->future)) {
        int rc;
        if (req->status == 0) {
            PyObject *n = PyLong_FromUnsignedLongLong(req->sent);
            rc = n != NULL ? future_set_result(req->future, n) : -1;
            Py_XDECREF(n);
        } else {
            PyObject *exc = tcpy_error_object(st, req->status);
            rc = exc != NULL ? future_set_exception(req->future, exc) : -1;
            Py_XDECREF(exc);
        }
        if (rc < 0) {
            reactor_report(r, "sendfile");
        }
    }
    sendfile_free(req);
}

static const pyevent_ops_t sendfile_ops = {
    .run = sendfile_dispatch,
    .discard = sendfile_discard,
    .name = "sendfile",
};

static PyObject *
Transport_sendfile(TransportObject *t, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"file", "offset", "count", NULL};
    PyObject *file, *count_obj = Py_None;
    long long offset = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|LO:sendfile", kwlist,
                                     &file, &offset, &count_obj)) {
        return NULL;
    }
    /* Unlike a write, a file range has a Future that must say what became
     * of it: after the peer left it is an error, not a quiet drop. */
    if (reactor_check_thread(t->reactor) < 0) {
        return NULL;
    }
    if (t->write_eof || t->user_closed || !is_open(t)) {
        PyErr_Format(PyExc_BrokenPipeError, "sendfile(): the transport is %s",
                     t->write_eof ? "shut down for writing"
                     : t->user_closed ? "closed" : "closed by its peer");
        return NULL;
    }
    if (offset < 0) {
        PyErr_Format(PyExc_ValueError,
                     "sendfile(): 'offset' must be >= 0, got %lld", offset);
        return NULL;
    }
    unsigned long long count = 0;
    if (count_obj != Py_None) {
        long long c = PyLong_Check(count_obj) ? PyLong_AsLongLong(count_obj)
                                              : -1;
        if (c == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (c <= 0) {
            PyErr_Format(PyExc_ValueError, "sendfile(): 'count' must be an "
                         "int > 0 or None, got %R", count_obj);
            return NULL;
        }
        count = (unsigned long long)c;
    }
    int fd = PyObject_AsFileDescriptor(file);
    if (fd < 0) {
        return NULL;
    }
    tc_state *st = reactor_state(t->reactor);
    sendfile_req_t *req = PyMem_RawCalloc(1, sizeof(*req));
    if (req == NULL) {
        return PyErr_NoMemory();
    }
    /* Our own descriptor: the caller may close the file meanwhile. */
    req->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (req->fd < 0) {
        PyMem_RawFree(req);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    req->reactor = (ReactorObject *)Py_NewRef(t->reactor);
    req->file = PyLong_Check(file) ? NULL : Py_NewRef(file);
    req->offset = (uint64_t)offset;
    req->future = future_new(st, (PyObject *)t->reactor);
    if (req->future == NULL) {
        sendfile_free(req);
        return NULL;
    }
    transport_flush(t);   /* what write() buffered goes first */
    int err = tc_stream_sendfile(t->stream, req->fd, (uint64_t)offset, count,
                                 t_sendfile_done, req);
    if (err != 0) {
        sendfile_free(req);
        if (err == -EINVAL) {
            PyErr_Format(PyExc_ValueError, "sendfile(): 'file' must be a "
                         "regular file, got %R", file);
            return NULL;
        }
        return tcpy_raise(st, err);
    }
    reactor_wake(t->reactor);
    return Py_NewRef(req->future);
}

/* All or nothing: every item is checked before any is queued. */
static PyObject *
Transport_writelines(TransportObject *t, PyObject *iterable)
{
    PyObject *seq = PySequence_Fast(
        iterable, "writelines(): 'iterable' must be an iterable of "
                  "bytes-like data");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Py_buffer *views = PyMem_New(Py_buffer, n > 0 ? n : 1);
    if (views == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    Py_ssize_t got = 0;
    int rc = 1;
    for (; got < n; got++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, got);
        if (PyObject_GetBuffer(item, &views[got], PyBUF_SIMPLE) < 0) {
            PyErr_Format(PyExc_TypeError,
                         "writelines(): each item of 'iterable' must be "
                         "bytes-like data, got %.100s at index %zd",
                         Py_TYPE(item)->tp_name, got);
            rc = -1;
            break;
        }
    }
    if (rc > 0) {
        rc = check_writable(t, "writelines");
    }
    if (rc > 0) {
        size_t before = t->outbuf.len;
        for (Py_ssize_t i = 0; i < n && rc > 0; i++) {
            if (views[i].len > 0 &&   /* an empty one's buf may be NULL */
                bytebuf_append(&t->outbuf, views[i].buf,
                               (size_t)views[i].len) != 0) {
                t->outbuf.len = before;
                PyErr_NoMemory();
                rc = -1;
            }
        }
        if (rc > 0 && t->outbuf.len > before) {
            wrote(t);
        }
    }
    for (Py_ssize_t i = 0; i < got; i++) {
        PyBuffer_Release(&views[i]);
    }
    PyMem_Free(views);
    Py_DECREF(seq);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static void
transport_close_impl(TransportObject *t)
{
    if (!is_open(t)) {
        return;
    }
    stop_input(t);
    t->closing = true;
    transport_flush(t);
    tc_stream_close(t->stream, t_on_closed);
}

static PyObject *
Transport_close(TransportObject *t, PyObject *unused)
{
    (void)unused;
    if (!is_open(t)) {
        t->user_closed = true;   /* write() raises from now on */
        Py_RETURN_NONE;          /* also once the reactor is closed */
    }
    if (reactor_check_thread(t->reactor) < 0) {
        return NULL;
    }
    t->user_closed = true;
    transport_close_impl(t);
    Py_RETURN_NONE;
}

static PyObject *
Transport_abort(TransportObject *t, PyObject *unused)
{
    (void)unused;
    if (!is_open(t)) {
        t->user_closed = true;   /* write() raises from now on */
        Py_RETURN_NONE;          /* also once the reactor is closed */
    }
    if (reactor_check_thread(t->reactor) < 0) {
        return NULL;
    }
    t->user_closed = true;
    if (is_open(t)) {
        stop_input(t);
        t->closing = true;
        t->outbuf.len = 0;
        tc_stream_abort(t->stream, t_on_closed);
    }
    Py_RETURN_NONE;
}

static PyObject *
Transport_write_eof(TransportObject *t, PyObject *unused)
{
    (void)unused;
    int rc = check_writable(t, "write_eof");
    if (rc <= 0) {
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    }
    t->write_eof = true;
    transport_flush(t);
    int err = tc_stream_shutdown(t->stream);
    if (err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN) {
        /* The peer left; connection_lost will say so. */
        Py_RETURN_NONE;
    }
    if (err != 0) {
        return tcpy_raise(reactor_state(t->reactor), err);
    }
    Py_RETURN_NONE;
}

static PyObject *
Transport_pause_reading(TransportObject *t, PyObject *unused)
{
    (void)unused;
    if (reactor_check_thread(t->reactor) < 0) {
        return NULL;
    }
    t->reading_paused = true;
    if (t->stream != NULL) {
        tc_stream_read_stop(t->stream);
    }
    Py_RETURN_NONE;
}

static PyObject *
Transport_resume_reading(TransportObject *t, PyObject *unused)
{
    (void)unused;
    if (reactor_check_thread(t->reactor) < 0) {
        return NULL;
    }
    if (!t->reading_paused) {
        Py_RETURN_NONE;
    }
    t->reading_paused = false;
    if (is_open(t) && !t->eof) {
        tc_stream_read_start(t->stream);
    }
    /* Bytes read before the pause, and an EOF behind them. */
    if (t->inbuf.len > 0 && !t->data_queued) {
        t->data_queued = true;
        pyevents_push(t->reactor, &transport_ops, PYEV_DATA, (PyObject *)t,
                      NULL, 0);
    }
    if (t->eof_deferred) {
        t->eof_deferred = false;
        pyevents_push(t->reactor, &transport_ops, PYEV_EOF, (PyObject *)t,
                      NULL, 0);
    }
    reactor_wake(t->reactor);
    Py_RETURN_NONE;
}

static PyObject *
Transport_is_reading(TransportObject *t, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(is_open(t) && !t->reading_paused && !t->eof);
}

static PyObject *
Transport_is_closing(TransportObject *t, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(!is_open(t));
}

static PyObject *
Transport_get_peer(TransportObject *t, PyObject *unused)
{
    (void)unused;
    return address_of(t, true);
}

static PyObject *
Transport_get_host(TransportObject *t, PyObject *unused)
{
    (void)unused;
    return address_of(t, false);
}

static PyObject *
Transport_get_write_buffer_size(TransportObject *t, PyObject *unused)
{
    (void)unused;
    return PyLong_FromSize_t(pending_writes(t));
}

static PyObject *
Transport_get_write_buffer_limits(TransportObject *t, PyObject *unused)
{
    (void)unused;
    return Py_BuildValue("(nn)", (Py_ssize_t)t->low_water,
                         (Py_ssize_t)t->high_water);
}

static PyObject *
Transport_set_write_buffer_limits(TransportObject *t, PyObject *args,
                                  PyObject *kwargs)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *high_obj = Py_None, *low_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs,
                                     "|OO:set_write_buffer_limits", kwlist,
                                     &high_obj, &low_obj)) {
        return NULL;
    }
    if (reactor_check_thread(t->reactor) < 0) {
        return NULL;
    }
    Py_ssize_t high = -1, low = -1;
    if (high_obj != Py_None) {
        if (!PyLong_Check(high_obj)) {
            PyErr_Format(PyExc_TypeError,
                         "set_write_buffer_limits(): 'high' must be an int "
                         "or None, got %.100s", Py_TYPE(high_obj)->tp_name);
            return NULL;
        }
        high = PyLong_AsSsize_t(high_obj);
        if (high == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (low_obj != Py_None) {
        if (!PyLong_Check(low_obj)) {
            PyErr_Format(PyExc_TypeError,
                         "set_write_buffer_limits(): 'low' must be an int "
                         "or None, got %.100s", Py_TYPE(low_obj)->tp_name);
            return NULL;
        }
        low = PyLong_AsSsize_t(low_obj);
        if (low == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (low < 0) {
            PyErr_Format(PyExc_ValueError,
                         "set_write_buffer_limits(): 'low' must be >= 0, "
                         "got %zd", low);
            return NULL;
        }
    }
    if (high_obj == Py_None) {
        high = low_obj == Py_None ? (Py_ssize_t)DEFAULT_HIGH : low * 4;
    } else if (high < 0) {
        PyErr_Format(PyExc_ValueError,
                     "set_write_buffer_limits(): 'high' must be >= 0, got "
                     "%zd", high);
        return NULL;
    }
    if (low_obj == Py_None) {
        low = high / 4;
    }
    if (high < 0 || low < 0 || low > high) {
        PyErr_Format(PyExc_ValueError,
                     "set_write_buffer_limits(): need 0 <= low <= high, got "
                     "high=%zd low=%zd", high, low);
        return NULL;
    }
    t->high_water = (size_t)high;
    t->low_water = (size_t)low;
    if (t->stream != NULL) {
        tc_stream_set_watermarks(t->stream, t->low_water, t->high_water);
    }
    if (!t->writing_paused && pending_writes(t) > t->high_water) {
        t->writing_paused = true;
        call_protocol(t, reactor_state(t->reactor)->str_pause_writing, NULL,
                      "pause_writing");
    } else if (t->writing_paused && pending_writes(t) <= t->low_water) {
        pyevents_push(t->reactor, &transport_ops, PYEV_RESUME, (PyObject *)t,
                      NULL, 0);
        reactor_wake(t->reactor);
    }
    Py_RETURN_NONE;
}

static PyObject *
Transport_get_extra_info(TransportObject *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "default", NULL};
    const char *name;
    PyObject *dflt = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|O:get_extra_info", kwlist,
                                     &name, &dflt)) {
        return NULL;
    }
    if (strcmp(name, "peername") == 0) {
        return address_of(t, true);
    }
    if (strcmp(name, "sockname") == 0) {
        return address_of(t, false);
    }
    PyObject *value;
    int rc = tls_extra_info(t, name, &value);
    if (rc != 0) {
        return rc > 0 ? value : NULL;
    }
    return Py_NewRef(dflt);
}

static PyObject *
Transport_get_protocol(TransportObject *t, void *closure)
{
    (void)closure;
    return Py_NewRef(t->protocol ? t->protocol : Py_None);
}

static int
Transport_set_protocol(TransportObject *t, PyObject *value, void *closure)
{
    (void)closure;
    if (value == NULL || value == Py_None) {
        PyErr_SetString(PyExc_TypeError, "protocol cannot be deleted");
        return -1;
    }
    Py_XSETREF(t->protocol, Py_NewRef(value));
    return 0;
}

static PyObject *
Transport_get_reactor(TransportObject *t, void *closure)
{
    (void)closure;
    return Py_NewRef((PyObject *)t->reactor);
}

static int
Transport_traverse(TransportObject *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->reactor);
    Py_VISIT(t->protocol);
    Py_VISIT(t->factory);
    Py_VISIT(t->on_connect);
    Py_VISIT(t->peer);
    Py_VISIT(t->host);
    Py_VISIT(t->connect_to);
    Py_VISIT(t->failure);
    return framing_traverse(t, visit, arg);
}

static int
Transport_clear(TransportObject *t)
{
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->factory);
    Py_CLEAR(t->on_connect);
    Py_CLEAR(t->peer);
    Py_CLEAR(t->host);
    Py_CLEAR(t->connect_to);
    Py_CLEAR(t->failure);
    framing_free(t);
    return 0;
}

static void
Transport_dealloc(TransportObject *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    if (t->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)t);
    }
    Transport_clear(t);
    if (t->dirty_listed && t->reactor != NULL) {
        TransportObject **p = &t->reactor->dirty;
        while (*p != NULL && *p != t) {
            p = &(*p)->next_dirty;
        }
        if (*p == t) {
            *p = t->next_dirty;
        }
    }
    bytebuf_free(&t->inbuf);
    bytebuf_free(&t->outbuf);
    Py_CLEAR(t->reactor);
    tp->tp_free((PyObject *)t);
    Py_DECREF(tp);
}

static PyObject *
Transport_repr(TransportObject *t)
{
    return PyUnicode_FromFormat("<twincore.Transport %s %s>",
                                t->is_unix ? "unix" : "tcp",
                                t->closed ? "closed"
                                          : (t->closing ? "closing" : "open"));
}

static PyObject *
Transport_fileno(TransportObject *t, PyObject *unused)
{
    (void)unused;
    /* -1 once closed, as socket.fileno(); the descriptor stays twincore's:
     * use it for socket options, never to read, write or close. */
    return PyLong_FromLong(t->stream != NULL ? tc_stream_fd(t->stream) : -1);
}

static PyMethodDef Transport_methods[] = {
    {"fileno", (PyCFunction)Transport_fileno, METH_NOARGS,
     "fileno($self, /)\n--\n\nThe socket's descriptor, -1 once closed. It "
     "stays the transport's: for socket options, not to read, write or "
     "close."},
    {"set_framing", (PyCFunction)(void (*)(void))transport_set_framing,
     METH_VARARGS | METH_KEYWORDS,
     "set_framing($self, on_frame=None, *, delimiter=None, prefix=0,\n"
     "            max_length=16384, on_too_long=None, unread=b'')\n--\n\n"
     "Split the input in C: on_frame(line) per line ending with delimiter,\n"
     "or on_frame(string) per string after a big-endian length of prefix\n"
     "(1, 2 or 4) bytes, instead of data_received(). A line over\n"
     "max_length goes to on_too_long(bytes), a length over it to\n"
     "on_too_long(length). on_frame=None: data_received() again. unread\n"
     "goes back in front of the input. Used by twincore.LineReceiver and\n"
     "Int*StringReceiver."},
    {"write_line", (PyCFunction)transport_write_line, METH_O,
     "write_line($self, line, /)\n--\n\nwrite(line + delimiter), the "
     "delimiter of the line framing\n(set_framing); LineReceiver.send_line "
     "on a twincore transport."},
    {"write", (PyCFunction)Transport_write, METH_O,
     "write($self, data, /)\n--\n\nQueue bytes after any already queued; "
     "sent after the current batch of callbacks. Raises BrokenPipeError "
     "after the program's own close(), abort() or write_eof(); once the "
     "connection was lost otherwise (the peer left, an error), the data is "
     "dropped quietly, as asyncio and Twisted do."},
    {"writelines", (PyCFunction)Transport_writelines, METH_O,
     "writelines($self, iterable, /)\n--\n\nwrite() the items, all or "
     "nothing: a TypeError for any item queues none."},
    {"sendfile", (PyCFunction)(void (*)(void))Transport_sendfile,
     METH_VARARGS | METH_KEYWORDS,
     "sendfile($self, file, offset=0, count=None)\n--\n\nSend count "
     "bytes (None: up to the end) of a regular file from offset, after "
     "what was written before and before what is written after; returns "
     "a Future of the bytes sent (fewer if the file ended first). Plain "
     "connections use sendfile(2), TLS reads and encodes. The file's "
     "position is set after the range once done."},
    {"close", (PyCFunction)Transport_close, METH_NOARGS,
     "close($self, /)\n--\n\nFlush what is queued, then close; no more "
     "data_received() or eof_received(), connection_lost(None) follows."},
    {"abort", (PyCFunction)Transport_abort, METH_NOARGS,
     "abort($self, /)\n--\n\nDiscard what is queued and reset the "
     "connection; only connection_lost() follows."},
    {"write_eof", (PyCFunction)Transport_write_eof, METH_NOARGS,
     "write_eof($self, /)\n--\n\nShut down the write side after the "
     "queue is flushed; reading goes on."},
    {"pause_reading", (PyCFunction)Transport_pause_reading, METH_NOARGS,
     "pause_reading($self, /)\n--\n\nNo data_received() until "
     "resume_reading()."},
    {"resume_reading", (PyCFunction)Transport_resume_reading, METH_NOARGS,
     "resume_reading($self, /)\n--\n\nResume data_received() calls."},
    {"is_reading", (PyCFunction)Transport_is_reading, METH_NOARGS,
     "is_reading($self, /)\n--\n\n"},
    {"is_closing", (PyCFunction)Transport_is_closing, METH_NOARGS,
     "is_closing($self, /)\n--\n\n"},
    {"get_peer", (PyCFunction)Transport_get_peer, METH_NOARGS,
     "get_peer($self, /)\n--\n\nThe peer's address: (host, port) or a path."},
    {"get_host", (PyCFunction)Transport_get_host, METH_NOARGS,
     "get_host($self, /)\n--\n\nThe local address."},
    {"get_write_buffer_size", (PyCFunction)Transport_get_write_buffer_size,
     METH_NOARGS,
     "get_write_buffer_size($self, /)\n--\n\nBytes queued, not yet sent."},
    {"get_write_buffer_limits",
     (PyCFunction)Transport_get_write_buffer_limits, METH_NOARGS,
     "get_write_buffer_limits($self, /)\n--\n\n(low, high)."},
    {"set_write_buffer_limits",
     (PyCFunction)(void (*)(void))Transport_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS,
     "set_write_buffer_limits($self, high=None, low=None)\n--\n\nAbove "
     "high, protocol.pause_writing(); at or under low, resume_writing()."},
    {"get_extra_info", (PyCFunction)(void (*)(void))Transport_get_extra_info,
     METH_VARARGS | METH_KEYWORDS,
     "get_extra_info($self, name, default=None)\n--\n\n'peername' or "
     "'sockname', as asyncio's."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Transport_getset[] = {
    {"protocol", (getter)Transport_get_protocol,
     (setter)Transport_set_protocol, "The protocol receiving events.", NULL},
    {"reactor", (getter)Transport_get_reactor, NULL, "The reactor.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Transport_members[] = {
    {"__weaklistoffset__", T_PYSSIZET,
     offsetof(TransportObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Transport_slots[] = {
    {Py_tp_dealloc, Transport_dealloc},
    {Py_tp_traverse, Transport_traverse},
    {Py_tp_clear, Transport_clear},
    {Py_tp_methods, Transport_methods},
    {Py_tp_getset, Transport_getset},
    {Py_tp_members, Transport_members},
    {Py_tp_repr, Transport_repr},
    {Py_tp_doc, "A stream connection (TCP or Unix). Made by the reactor."},
    {0, NULL},
};

PyType_Spec Transport_spec = {
    .name = "twincore._twincore.Transport",
    .basicsize = sizeof(TransportObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Transport_slots,
};

/* ==== Listener ============================================================ */

typedef struct {
    PyObject_HEAD
    ReactorObject *reactor;
    tc_server_t *server;      /* NULL once closed */
    PyObject *factory;
    PyObject *tls_context;    /* TLSContext, or NULL for plain TCP */
    uint64_t tls_timeout_ms;
    bool is_unix;
    bool gone;                /* its server's close was dispatched */
    PyObject *closed_fut;     /* wait_closed()'s Future, or NULL */
    loopref_t held;           /* listed while the server holds us */
    PyObject *weakreflist;
} ListenerObject;

void
listener_set_tls(PyObject *listener, PyObject *context,
                 uint64_t handshake_timeout_ms)
{
    ListenerObject *l = (ListenerObject *)listener;
    Py_XSETREF(l->tls_context, Py_NewRef(context));
    l->tls_timeout_ms = handshake_timeout_ms;
}

void
listener_on_connection(tc_server_t *server, tc_stream_t *conn, int status)
{
    ListenerObject *l = tc_handle_data(tc_server_handle(server));
    if (l == NULL) {
        if (conn != NULL) {
            tc_close(tc_stream_handle(conn), NULL);
        }
        return;
    }
    if (conn != NULL) {
        pyevents_push(l->reactor, &listener_ops, PYEV_ACCEPT, (PyObject *)l,
                      conn, 0);
    } else {
        pyevents_push(l->reactor, &listener_ops, PYEV_ACCEPT_ERROR,
                      (PyObject *)l, NULL, status);
    }
}

static void
l_on_closed(tc_handle_t *h)
{
    ListenerObject *l = tc_handle_data(h);
    if (l == NULL) {
        return;
    }
    pyevents_push(l->reactor, &listener_ops, PYEV_LISTENER_CLOSED,
                  (PyObject *)l, NULL, 0);
}

static void
listener_dispatch(ReactorObject *r, pyevent_t *ev)
{
    ListenerObject *l = (ListenerObject *)ev->obj;
    switch (ev->kind) {
    case PYEV_ACCEPT: {
        tc_stream_t *conn = ev->ptr;
        PyObject *t = transport_new(r, conn, l->is_unix);
        if (t == NULL) {
            reactor_report(r, "accept");
            tc_stream_abort(conn, NULL);
            break;
        }
        if (l->tls_context != NULL) {
            /* The protocol follows the handshake (PYEV_CONNECTED). */
            TransportObject *tr = (TransportObject *)t;
            tr->factory = Py_NewRef(l->factory);
            tc_tls_ctx_t *ctx = tlscontext_native(
                reactor_state(r), l->tls_context, "listen_tls", true);
            int err = ctx != NULL ? tc_tls_wrap(conn, ctx, NULL,
                                                transport_on_connect,
                                                l->tls_timeout_ms)
                                  : -EINVAL;
            if (err != 0) {
                PyErr_Clear();
                tr->error = err;
                tr->closing = true;
                tc_stream_abort(conn, t_on_closed);
            }
            Py_DECREF(t);
            break;
        }
        start_protocol((TransportObject *)t, l->factory);
        Py_DECREF(t);
        break;
    }
    case PYEV_ACCEPT_ERROR: {
        PyObject *res = PyObject_CallMethod(
            reactor_state(r)->logger, "warning", "ss",
            "twincore: accept failed (%s); the listener retries when "
            "descriptors are free",
            tc_strerror(ev->status));
        if (res == NULL) {
            reactor_report(r, "logging");
        }
        Py_XDECREF(res);
        break;
    }
    case PYEV_LISTENER_CLOSED: {
        l->gone = true;
        PyObject *fut = l->closed_fut;
        l->closed_fut = NULL;
        if (fut != NULL) {
            if (future_is_pending(fut) && future_set_result(fut, Py_None) < 0) {
                reactor_report(r, "a wait_closed() callback");
            }
            Py_DECREF(fut);
        }
        Py_XDECREF(reactor_unhold(r, &l->held));   /* the handle's */
        break;
    }
    default:
        break;
    }
}

static const pyevent_ops_t listener_ops = {
    .run = listener_dispatch,
    .name = "listener",
};

/* loopref_t.detach: the reactor closes.  A listener closed before has
 * forgotten its server; that close callback runs with the loop's close,
 * while the reactor still holds the listener, and its event is dropped. */
static void
listener_detach(PyObject *obj)
{
    ListenerObject *l = (ListenerObject *)obj;
    if (l->server != NULL) {
        tc_handle_t *h = tc_server_handle(l->server);
        tc_handle_set_data(h, NULL);
        tc_close(h, NULL);
        l->server = NULL;
    }
}

PyObject *
listener_new(ReactorObject *r, tc_server_t *server, PyObject *factory,
             bool is_unix)
{
    tc_state *st = reactor_state(r);
    ListenerObject *l = PyObject_GC_New(ListenerObject, st->Listener_type);
    if (l == NULL) {
        tc_close(tc_server_handle(server), NULL);
        return NULL;
    }
    l->reactor = (ReactorObject *)Py_NewRef(r);
    l->server = server;
    l->factory = Py_NewRef(factory);
    l->is_unix = is_unix;
    l->tls_context = NULL;
    l->tls_timeout_ms = 0;
    l->gone = false;
    l->closed_fut = NULL;
    l->weakreflist = NULL;
    l->held = (loopref_t){0};
    tc_handle_set_data(tc_server_handle(server), l);
    reactor_hold(r, &l->held, (PyObject *)l, listener_detach);
    PyObject_GC_Track(l);
    return (PyObject *)l;
}

static PyObject *
Listener_close(ListenerObject *l, PyObject *unused)
{
    (void)unused;
    if (l->server == NULL) {
        Py_RETURN_NONE;   /* also once the reactor is closed */
    }
    if (reactor_check_thread(l->reactor) < 0) {
        return NULL;
    }
    if (l->server != NULL) {
        tc_close(tc_server_handle(l->server), l_on_closed);
        l->server = NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Listener_pause(ListenerObject *l, PyObject *unused)
{
    (void)unused;
    if (l->server == NULL) {
        Py_RETURN_NONE;   /* closed: nothing accepts anyway */
    }
    if (reactor_check_thread(l->reactor) < 0) {
        return NULL;
    }
    tc_server_pause(l->server);
    Py_RETURN_NONE;
}

static PyObject *
Listener_resume(ListenerObject *l, PyObject *unused)
{
    (void)unused;
    if (l->server == NULL) {
        Py_RETURN_NONE;
    }
    if (reactor_check_thread(l->reactor) < 0) {
        return NULL;
    }
    tc_server_resume(l->server);
    Py_RETURN_NONE;
}

static PyObject *
Listener_wait_closed(ListenerObject *l, PyObject *unused)
{
    (void)unused;
    tc_state *st = reactor_state(l->reactor);
    if (l->closed_fut != NULL) {
        return Py_NewRef(l->closed_fut);
    }
    PyObject *fut = future_new(st, (PyObject *)l->reactor);
    if (fut == NULL) {
        return NULL;
    }
    if (l->gone) {
        if (future_set_result(fut, Py_None) < 0) {
            Py_DECREF(fut);
            return NULL;
        }
        return fut;
    }
    /* Also a listener of a closed reactor: that Future stays pending, as
     * every Future the reactor would settle. */
    l->closed_fut = Py_NewRef(fut);
    return fut;
}

static PyObject *
Listener_get_host(ListenerObject *l, PyObject *unused)
{
    (void)unused;
    if (l->server == NULL) {
        Py_RETURN_NONE;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int err = tc_server_sockname(l->server, (struct sockaddr *)&ss, &len);
    if (err != 0) {
        return tcpy_raise(reactor_state(l->reactor), err);
    }
    return tcpy_sockaddr_to_py((struct sockaddr *)&ss, len);
}

static PyObject *
Listener_get_port(ListenerObject *l, void *closure)
{
    (void)closure;
    if (l->server == NULL || l->is_unix) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLong(tc_server_port(l->server));
}

static PyObject *
Listener_get_accepted(ListenerObject *l, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(
        l->server ? tc_server_accepted(l->server) : 0);
}

static int
Listener_traverse(ListenerObject *l, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(l));
    Py_VISIT(l->reactor);
    Py_VISIT(l->factory);
    Py_VISIT(l->tls_context);
    Py_VISIT(l->closed_fut);
    return 0;
}

static int
Listener_clear(ListenerObject *l)
{
    Py_CLEAR(l->factory);
    Py_CLEAR(l->tls_context);
    Py_CLEAR(l->closed_fut);
    return 0;
}

static void
Listener_dealloc(ListenerObject *l)
{
    PyTypeObject *tp = Py_TYPE(l);
    PyObject_GC_UnTrack(l);
    if (l->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)l);
    }
    Listener_clear(l);
    Py_CLEAR(l->reactor);
    tp->tp_free((PyObject *)l);
    Py_DECREF(tp);
}

static PyObject *
Listener_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyObject *
Listener_exit(ListenerObject *l, PyObject *args)
{
    (void)args;
    PyObject *res = Listener_close(l, NULL);
    if (res == NULL) {
        return NULL;
    }
    Py_DECREF(res);
    Py_RETURN_FALSE;
}

static PyMethodDef Listener_methods[] = {
    {"close", (PyCFunction)Listener_close, METH_NOARGS,
     "close($self, /)\n--\n\nStop listening; open connections stay open."},
    {"get_host", (PyCFunction)Listener_get_host, METH_NOARGS,
     "get_host($self, /)\n--\n\nThe local address."},
    {"pause", (PyCFunction)Listener_pause, METH_NOARGS,
     "pause($self, /)\n--\n\nStop accepting; new connections wait in the "
     "backlog."},
    {"resume", (PyCFunction)Listener_resume, METH_NOARGS,
     "resume($self, /)\n--\n\nAccept again after pause()."},
    {"wait_closed", (PyCFunction)Listener_wait_closed, METH_NOARGS,
     "wait_closed($self, /)\n--\n\nA Future resolved with None once the "
     "listener has fully closed after close(): its socket is closed (a Unix "
     "path unlinked) and no connection will be accepted any more."},
    {"__enter__", (PyCFunction)Listener_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Listener_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Listener_getset[] = {
    {"port", (getter)Listener_get_port, NULL, "The TCP port.", NULL},
    {"accepted", (getter)Listener_get_accepted, NULL,
     "Connections accepted so far.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Listener_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ListenerObject, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Listener_slots[] = {
    {Py_tp_dealloc, Listener_dealloc},
    {Py_tp_traverse, Listener_traverse},
    {Py_tp_clear, Listener_clear},
    {Py_tp_methods, Listener_methods},
    {Py_tp_getset, Listener_getset},
    {Py_tp_members, Listener_members},
    {Py_tp_doc, "A listening socket. Made by listen_tcp()/listen_unix()."},
    {0, NULL},
};

PyType_Spec Listener_spec = {
    .name = "twincore._twincore.Listener",
    .basicsize = sizeof(ListenerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Listener_slots,
};
