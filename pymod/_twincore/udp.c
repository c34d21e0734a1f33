/* DatagramTransport: a UDP socket for a DatagramProtocol.  Each datagram is
 * copied out of the loop's read buffer without the GIL and delivered in
 * the batch as datagram_received(data, addr). */
#include <sys/socket.h>

#include "dispatch.h"
#include "errors.h"
#include "module.h"
#include "reactor.h"
#include "udp.h"

typedef struct datagram {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    size_t len;
    char data[];
} datagram_t;

typedef struct {
    PyObject_HEAD
    ReactorObject *reactor;
    tc_udp_t *udp;            /* NULL once closed */
    PyObject *protocol;
    bool made;                /* connection_made was called */
    loopref_t held;           /* listed while the socket holds us */
    PyObject *weakreflist;
} DatagramObject;

static void announce(DatagramObject *d);

/* The events this file queues (dispatch.h); obj: the DatagramTransport. */
enum {
    PYEV_DATAGRAM = 1, /* ptr: datagram_t*, owned */
    PYEV_UDP_ERROR,    /* status */
    PYEV_UDP_CLOSED,
};
static const pyevent_ops_t udp_ops;   /* beside udp_dispatch() */

static void
d_on_closed(tc_handle_t *h)
{
    DatagramObject *d = tc_handle_data(h);
    if (d == NULL) {
        return;   /* the reactor closed */
    }
    pyevents_push(d->reactor, &udp_ops, PYEV_UDP_CLOSED, (PyObject *)d,
                  NULL, 0);
}

/* GIL: none. */
void
udp_on_recv(tc_udp_t *udp, const char *buf, size_t len,
            const struct sockaddr *from, socklen_t fromlen, int status)
{
    DatagramObject *d = tc_handle_data(tc_udp_handle(udp));
    if (d == NULL) {
        return;   /* the reactor closed */
    }
    if (status != 0) {
        pyevents_push(d->reactor, &udp_ops, PYEV_UDP_ERROR, (PyObject *)d,
                      NULL, status);
        return;
    }
    datagram_t *dg = malloc(sizeof(*dg) + len);
    if (dg == NULL) {
        pyevents_push(d->reactor, &udp_ops, PYEV_UDP_ERROR, (PyObject *)d,
                      NULL, -ENOMEM);
        return;
    }
    dg->len = len;
    dg->addrlen = fromlen <= sizeof(dg->addr) ? fromlen : sizeof(dg->addr);
    memcpy(&dg->addr, from, dg->addrlen);
    memcpy(dg->data, buf, len);
    if (pyevents_push(d->reactor, &udp_ops, PYEV_DATAGRAM, (PyObject *)d,
                      dg, 0) != 0) {
        free(dg);
    }
}

static void
udp_dispatch(ReactorObject *r, pyevent_t *ev)
{
    DatagramObject *d = (DatagramObject *)ev->obj;
    tc_state *st = reactor_state(r);
    switch (ev->kind) {
    case PYEV_DATAGRAM: {
        datagram_t *dg = ev->ptr;
        if (d->protocol != NULL && d->udp != NULL) {
            PyObject *data = PyBytes_FromStringAndSize(dg->data,
                                                       (Py_ssize_t)dg->len);
            PyObject *addr = tcpy_sockaddr_to_py(
                (struct sockaddr *)&dg->addr, dg->addrlen);
            PyObject *res = NULL;
            if (data != NULL && addr != NULL) {
                PyObject *argv[] = {d->protocol, data, addr};
                res = PyObject_VectorcallMethod(
                    st->str_datagram_received, argv,
                    3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            }
            if (res == NULL) {
                reactor_report(r, "datagram_received");
            }
            Py_XDECREF(res);
            Py_XDECREF(data);
            Py_XDECREF(addr);
        }
        free(dg);
        break;
    }
    case PYEV_UDP_ERROR:
        if (d->protocol != NULL && d->udp != NULL) {
            PyObject *exc = tcpy_error_object(st, ev->status);
            PyObject *res = exc ? PyObject_CallMethodOneArg(
                                      d->protocol, st->str_error_received, exc)
                                : NULL;
            if (res == NULL) {
                reactor_report(r, "error_received");
            }
            Py_XDECREF(res);
            Py_XDECREF(exc);
        }
        break;
    case PYEV_UDP_CLOSED: {
        announce(d);   /* closed before the first batch: made, then lost */
        PyObject *proto = d->protocol;
        d->protocol = NULL;
        if (proto != NULL) {
            PyObject *res = PyObject_CallMethodOneArg(
                proto, st->str_connection_lost, Py_None);
            if (res == NULL) {
                reactor_report(r, "connection_lost");
            }
            Py_XDECREF(res);
            Py_DECREF(proto);
        }
        Py_XDECREF(reactor_unhold(r, &d->held));   /* the handle's */
        break;
    }
    default:
        break;
    }
}

static void
udp_discard(ReactorObject *r, pyevent_t *ev)
{
    (void)r;
    if (ev->kind == PYEV_DATAGRAM) {
        free(ev->ptr);
    }
}

static const pyevent_ops_t udp_ops = {
    .run = udp_dispatch,
    .discard = udp_discard,
    .name = "udp",
};

/* loopref_t.detach: the reactor closes; the socket goes with it.  The
 * socket's reference is listed on the reactor: see transport.c. */
static void
datagram_detach(PyObject *obj)
{
    DatagramObject *d = (DatagramObject *)obj;
    if (d->udp != NULL) {
        tc_handle_t *h = tc_udp_handle(d->udp);
        tc_handle_set_data(h, NULL);
        tc_close(h, NULL);
        d->udp = NULL;
    }
}

void
datagram_reactor_closed(PyObject *obj)
{
    DatagramObject *d = (DatagramObject *)obj;
    if (!d->made || d->protocol == NULL) {
        return;   /* connection_made never ran: nothing to end */
    }
    PyObject *proto = d->protocol;
    d->protocol = NULL;
    PyObject *res = PyObject_CallMethodOneArg(
        proto, reactor_state(d->reactor)->str_connection_lost, Py_None);
    if (res == NULL) {
        reactor_report(d->reactor, "connection_lost");
    }
    Py_XDECREF(res);
    Py_DECREF(proto);
}

PyObject *
datagram_new(ReactorObject *r, tc_udp_t *udp, PyObject *protocol)
{
    tc_state *st = reactor_state(r);
    DatagramObject *d = PyObject_GC_New(DatagramObject,
                                        st->DatagramTransport_type);
    if (d == NULL) {
        tc_close(tc_udp_handle(udp), NULL);
        return NULL;
    }
    d->reactor = (ReactorObject *)Py_NewRef(r);
    d->udp = udp;
    d->protocol = Py_NewRef(protocol);
    d->made = false;
    d->weakreflist = NULL;
    d->held = (loopref_t){0};
    tc_handle_set_data(tc_udp_handle(udp), d);
    reactor_hold(r, &d->held, (PyObject *)d, datagram_detach);
    PyObject_GC_Track(d);
    /* connection_made runs on the next batch, as asyncio's does, and
     * receiving starts only after it: no datagram_received comes first. */
    PyObject *start = PyObject_GetAttrString((PyObject *)d, "_start");
    PyObject *args = start ? PyTuple_New(0) : NULL;
    int rc = args ? reactor_call_soon_obj(r, start, args) : -1;
    Py_XDECREF(start);
    Py_XDECREF(args);
    if (rc < 0) {
        tc_close(tc_udp_handle(udp), d_on_closed);
        d->udp = NULL;
        Py_DECREF(d);
        return NULL;
    }
    reactor_wake(r);
    return (PyObject *)d;
}

/* connection_made, once, before anything else reaches the protocol. */
static void
announce(DatagramObject *d)
{
    if (d->made || d->protocol == NULL) {
        return;
    }
    d->made = true;
    tc_state *st = reactor_state(d->reactor);
    PyObject *proto = Py_NewRef(d->protocol);
    /* .transport before connection_made, as for streams; quietly not
     * for a protocol that cannot take it. */
    if (PyObject_SetAttrString(proto, "transport", (PyObject *)d) < 0) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError) ||
            PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
        } else {
            reactor_report(d->reactor, "connection_made");
        }
    }
    PyObject *res = PyObject_CallMethodOneArg(proto, st->str_connection_made,
                                              (PyObject *)d);
    Py_DECREF(proto);
    if (res == NULL) {
        reactor_report(d->reactor, "connection_made");
    }
    Py_XDECREF(res);
}

static PyObject *
Datagram_start(DatagramObject *d, PyObject *unused)
{
    (void)unused;
    announce(d);
    if (d->udp != NULL) {
        tc_udp_recv_start(d->udp, udp_on_recv);
    }
    Py_RETURN_NONE;
}

static int
check_open(DatagramObject *d, const char *method)
{
    if (reactor_check_thread(d->reactor) < 0) {
        return -1;
    }
    if (d->udp == NULL) {
        PyErr_Format(PyExc_BrokenPipeError, "%s(): the transport is closed",
                     method);
        return -1;
    }
    return 0;
}

static PyObject *
Datagram_sendto(DatagramObject *d, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "addr", NULL};
    Py_buffer view;
    PyObject *data;
    PyObject *addr = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:sendto", kwlist,
                                     &data, &addr)) {
        return NULL;
    }
    if (PyUnicode_Check(data) ||
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "sendto(): 'data' must be a bytes-like object, got "
                     "%.100s", Py_TYPE(data)->tp_name);
        return NULL;
    }
    if (check_open(d, "sendto") < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    int err;
    if (addr == Py_None) {
        err = tc_udp_send(d->udp, view.buf, (size_t)view.len, NULL, 0);
    } else {
        const char *host;
        int port;
        PyObject *pair = PyTuple_Check(addr) && PyTuple_GET_SIZE(addr) >= 2 &&
                                 PyTuple_GET_SIZE(addr) <= 4
                             ? PyTuple_GetSlice(addr, 0, 2)
                             : NULL;
        int ok = pair != NULL && PyArg_ParseTuple(pair, "si", &host, &port);
        Py_XDECREF(pair);
        if (!ok) {
            PyErr_Clear();
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_TypeError,
                         "sendto(): 'addr' must be a (host, port) tuple, got "
                         "%R", addr);
            return NULL;
        }
        err = tc_udp_send_to(d->udp, view.buf, (size_t)view.len, host, port);
        if (err == -EINVAL) {
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_ValueError,
                         "sendto(): 'addr' must hold a numeric address and a "
                         "port in 0..65535, got %R", addr);
            return NULL;
        }
    }
    PyBuffer_Release(&view);
    if (err != 0) {
        return tcpy_raise(reactor_state(d->reactor), err);
    }
    Py_RETURN_NONE;
}

static PyObject *
Datagram_close(DatagramObject *d, PyObject *unused)
{
    (void)unused;
    if (d->udp == NULL) {
        Py_RETURN_NONE;   /* also once the reactor is closed */
    }
    if (reactor_check_thread(d->reactor) < 0) {
        return NULL;
    }
    if (d->udp != NULL) {
        tc_close(tc_udp_handle(d->udp), d_on_closed);
        d->udp = NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Datagram_get_host(DatagramObject *d, PyObject *unused)
{
    (void)unused;
    if (check_open(d, "get_host") < 0) {
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int err = tc_udp_sockname(d->udp, (struct sockaddr *)&ss, &len);
    if (err != 0) {
        return tcpy_raise(reactor_state(d->reactor), err);
    }
    return tcpy_sockaddr_to_py((struct sockaddr *)&ss, len);
}

static PyObject *
Datagram_pause_reading(DatagramObject *d, PyObject *unused)
{
    (void)unused;
    if (check_open(d, "pause_reading") < 0) {
        return NULL;
    }
    tc_udp_recv_stop(d->udp);
    Py_RETURN_NONE;
}

static PyObject *
Datagram_resume_reading(DatagramObject *d, PyObject *unused)
{
    (void)unused;
    if (check_open(d, "resume_reading") < 0) {
        return NULL;
    }
    tc_udp_recv_start(d->udp, udp_on_recv);
    Py_RETURN_NONE;
}

static PyObject *
Datagram_is_closing(DatagramObject *d, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(d->udp == NULL);
}

static PyObject *
Datagram_get_write_buffer_size(DatagramObject *d, PyObject *unused)
{
    (void)unused;
    return PyLong_FromSize_t(d->udp ? tc_udp_send_queue_size(d->udp) : 0);
}

static int
Datagram_traverse(DatagramObject *d, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(d));
    Py_VISIT(d->reactor);
    Py_VISIT(d->protocol);
    return 0;
}

static int
Datagram_clear(DatagramObject *d)
{
    Py_CLEAR(d->protocol);
    return 0;
}

static void
Datagram_dealloc(DatagramObject *d)
{
    PyTypeObject *tp = Py_TYPE(d);
    PyObject_GC_UnTrack(d);
    if (d->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)d);
    }
    Datagram_clear(d);
    Py_CLEAR(d->reactor);
    tp->tp_free((PyObject *)d);
    Py_DECREF(tp);
}

static PyMethodDef Datagram_methods[] = {
    {"sendto", (PyCFunction)(void (*)(void))Datagram_sendto,
     METH_VARARGS | METH_KEYWORDS,
     "sendto($self, data, addr=None)\n--\n\nSend one datagram to addr "
     "(host, port); queued, never dropped, when the kernel is full."},
    {"write", (PyCFunction)(void (*)(void))Datagram_sendto,
     METH_VARARGS | METH_KEYWORDS,
     "write($self, data, addr=None)\n--\n\nThe same as sendto()."},
    {"close", (PyCFunction)Datagram_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose; connection_lost(None) follows."},
    {"_start", (PyCFunction)Datagram_start, METH_NOARGS,
     "_start($self, /)\n--\n\nInternal: connection_made, then receive."},
    {"get_host", (PyCFunction)Datagram_get_host, METH_NOARGS,
     "get_host($self, /)\n--\n\nThe bound (host, port)."},
    {"pause_reading", (PyCFunction)Datagram_pause_reading, METH_NOARGS,
     "pause_reading($self, /)\n--\n\n"},
    {"resume_reading", (PyCFunction)Datagram_resume_reading, METH_NOARGS,
     "resume_reading($self, /)\n--\n\n"},
    {"is_closing", (PyCFunction)Datagram_is_closing, METH_NOARGS,
     "is_closing($self, /)\n--\n\n"},
    {"get_write_buffer_size", (PyCFunction)Datagram_get_write_buffer_size,
     METH_NOARGS, "get_write_buffer_size($self, /)\n--\n\n"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Datagram_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(DatagramObject, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Datagram_slots[] = {
    {Py_tp_dealloc, Datagram_dealloc},
    {Py_tp_traverse, Datagram_traverse},
    {Py_tp_clear, Datagram_clear},
    {Py_tp_methods, Datagram_methods},
    {Py_tp_members, Datagram_members},
    {Py_tp_doc, "A UDP socket. Made by listen_udp()."},
    {0, NULL},
};

PyType_Spec DatagramTransport_spec = {
    .name = "twincore._twincore.DatagramTransport",
    .basicsize = sizeof(DatagramObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Datagram_slots,
};
