/* Framing: a Transport splits its input into lines or length-prefixed
 * strings in C, on the bytes already in its input buffer, and calls the
 * protocol once per frame (twincore.LineReceiver, Int*StringReceiver).
 *
 * Transport.set_framing() installs a mode; transport.c's deliver_data()
 * then calls framing_deliver() instead of data_received().  The split
 * follows Twisted's LineReceiver.dataReceived and
 * IntNStringReceiver.dataReceived byte for byte (the tests hold it to
 * Twisted's own classes).  After every call into Python the loop looks
 * again: the protocol may have paused reading, closed the transport,
 * changed the mode, or (through a nested write) grown nothing here; the
 * buffer may have moved (it is re-read, never cached across a call).
 * What is consumed is cut off the buffer once, after the loop, so a chunk
 * of n frames costs n bytes objects and one memmove.
 * GIL: held throughout; loop thread. */
#include <arpa/inet.h>

#include "framing.h"
#include "module.h"
#include "reactor.h"
#include "transport.h"

#define MAX_DELIMITER 64

enum { FRAME_LINE = 1, FRAME_PREFIX };

struct framing {
    int mode;
    size_t delim_len;
    char delim[MAX_DELIMITER];
    int width;                  /* FRAME_PREFIX: 1, 2 or 4 bytes, big-endian */
    size_t max_length;
    PyObject *on_frame;         /* strong: line_received / string_received */
    PyObject *on_too_long;      /* strong: line_length_exceeded /
                                 * length_limit_exceeded */
};

void
framing_free(TransportObject *t)
{
    framing_t *f = t->framing;
    if (f == NULL) {
        return;
    }
    t->framing = NULL;
    Py_XDECREF(f->on_frame);
    Py_XDECREF(f->on_too_long);
    PyMem_Free(f);
}

int
framing_traverse(TransportObject *t, visitproc visit, void *arg)
{
    if (t->framing != NULL) {
        Py_VISIT(t->framing->on_frame);
        Py_VISIT(t->framing->on_too_long);
    }
    return 0;
}

/* May frames still go to the protocol?  gen is t->framing_gen when the
 * delivery began: a set_framing() in a callback may have freed f (and a
 * new framing may sit at the same address), so f is not looked at again
 * once gen differs. */
static inline bool
can_deliver(TransportObject *t, unsigned gen)
{
    return t->framing_gen == gen && !t->closed && !t->input_done &&
           t->protocol != NULL && !t->reading_paused;
}

/* Call fn(arg) (stealing arg); -1 when it raised: the connection is
 * aborted (transport_protocol_failed). */
static int
call_frame(TransportObject *t, PyObject *fn, PyObject *arg,
           const char *context)
{
    if (arg == NULL) {
        reactor_report(t->reactor, context);
        return -1;
    }
    PyObject *res = PyObject_CallOneArg(fn, arg);
    Py_DECREF(arg);
    if (res == NULL) {
        transport_protocol_failed(t, context);
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

/* Twisted's LineReceiver: frames end with the delimiter; a line longer
 * than max_length, or max_length + len(delimiter) bytes with no
 * delimiter, goes whole (with everything after it) to on_too_long. */
static void
deliver_lines(TransportObject *t, framing_t *f)
{
    /* f stays alive while it is t->framing; a call that replaces it
     * ends the loop before f is used again. */
    Py_INCREF(f->on_frame);
    Py_INCREF(f->on_too_long);
    PyObject *on_frame = f->on_frame, *on_too_long = f->on_too_long;
    size_t dlen = f->delim_len;
    unsigned gen = t->framing_gen;
    while (t->inpos < t->inbuf.len && can_deliver(t, gen)) {
        const char *start = t->inbuf.data + t->inpos;
        size_t avail = t->inbuf.len - t->inpos;
        const char *hit = memmem(start, avail, f->delim, dlen);
        if (hit == NULL || (size_t)(hit - start) > f->max_length) {
            if (hit == NULL && avail < f->max_length + dlen) {
                break;   /* wait for the rest of the line */
            }
            PyObject *all = PyBytes_FromStringAndSize(start,
                                                      (Py_ssize_t)avail);
            t->inpos = t->inbuf.len;
            call_frame(t, on_too_long, all, "line_length_exceeded");
            break;   /* Twisted returns here: the buffer is gone */
        }
        size_t n = (size_t)(hit - start);
        PyObject *line = PyBytes_FromStringAndSize(start, (Py_ssize_t)n);
        t->inpos += n + dlen;
        if (call_frame(t, on_frame, line, "line_received") < 0) {
            break;
        }
    }
    Py_DECREF(on_frame);
    Py_DECREF(on_too_long);
}

/* Twisted's IntNStringReceiver: a big-endian unsigned length of width
 * bytes, then that many bytes.  A length over max_length goes to
 * on_too_long and stops delivery (the bytes stay, as in Twisted). */
static void
deliver_strings(TransportObject *t, framing_t *f)
{
    Py_INCREF(f->on_frame);
    Py_INCREF(f->on_too_long);
    PyObject *on_frame = f->on_frame, *on_too_long = f->on_too_long;
    size_t w = (size_t)f->width;
    unsigned gen = t->framing_gen;
    while (t->inpos <= t->inbuf.len && t->inbuf.len - t->inpos >= w &&
           can_deliver(t, gen)) {
        const unsigned char *p =
            (const unsigned char *)t->inbuf.data + t->inpos;
        size_t length = 0;
        for (size_t i = 0; i < w; i++) {
            length = (length << 8) | p[i];
        }
        if (length > f->max_length) {
            call_frame(t, on_too_long, PyLong_FromSize_t(length),
                       "length_limit_exceeded");
            break;
        }
        if (t->inbuf.len - t->inpos - w < length) {
            break;
        }
        PyObject *s = PyBytes_FromStringAndSize((const char *)p + w,
                                                (Py_ssize_t)length);
        t->inpos += w + length;
        if (call_frame(t, on_frame, s, "string_received") < 0) {
            break;
        }
    }
    Py_DECREF(on_frame);
    Py_DECREF(on_too_long);
}

void
framing_deliver(TransportObject *t)
{
    framing_t *f = t->framing;
    t->inpos = 0;
    if (f->mode == FRAME_LINE) {
        deliver_lines(t, f);
    } else {
        deliver_strings(t, f);
    }
    size_t pos = t->inpos;
    t->inpos = 0;
    /* close()/abort() in a callback emptied the buffer already. */
    if (pos >= t->inbuf.len) {
        t->inbuf.len = 0;
    } else if (pos > 0) {
        memmove(t->inbuf.data, t->inbuf.data + pos, t->inbuf.len - pos);
        t->inbuf.len -= pos;
    }
    if (t->inbuf.len == 0 && t->inbuf.cap > 1024 * 1024) {
        bytebuf_free(&t->inbuf);
    }
}

/* Put bytes back in front of what is not delivered yet (inside a running
 * framing_deliver(), after what it has delivered), for
 * set_line_mode(extra), and have them delivered.  Returns 0 or -1 with
 * MemoryError. */
static int
unread(TransportObject *t, const char *buf, size_t len)
{
    size_t at = t->inpos < t->inbuf.len ? t->inpos : t->inbuf.len;
    size_t old = t->inbuf.len;
    if (bytebuf_append(&t->inbuf, buf, len) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    memmove(t->inbuf.data + at + len, t->inbuf.data + at, old - at);
    memcpy(t->inbuf.data + at, buf, len);
    transport_queue_data(t);
    return 0;
}

PyObject *
transport_set_framing(TransportObject *t, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"on_frame", "delimiter", "prefix", "max_length",
                             "on_too_long", "unread", NULL};
    PyObject *on_frame = Py_None, *on_too_long = Py_None;
    Py_buffer delim = {0}, extra = {0};
    int prefix = 0;
    Py_ssize_t max_length = 16384;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$y*inOy*:set_framing",
                                     kwlist, &on_frame, &delim, &prefix,
                                     &max_length, &on_too_long, &extra)) {
        return NULL;
    }
    PyObject *ret = NULL;
    framing_t *f = NULL;
    if (reactor_check_thread(t->reactor) < 0) {
        goto done;
    }
    if (on_frame != Py_None) {
        int mode = delim.buf != NULL ? FRAME_LINE : FRAME_PREFIX;
        if ((delim.buf != NULL) == (prefix != 0)) {
            PyErr_SetString(PyExc_TypeError,
                            "set_framing(): give either 'delimiter' or "
                            "'prefix' with 'on_frame'");
            goto done;
        }
        if (mode == FRAME_LINE &&
            (delim.len < 1 || delim.len > MAX_DELIMITER)) {
            PyErr_Format(PyExc_ValueError,
                         "set_framing(): 'delimiter' must be 1 to %d bytes, "
                         "got %zd", MAX_DELIMITER, delim.len);
            goto done;
        }
        if (mode == FRAME_PREFIX && prefix != 1 && prefix != 2 &&
            prefix != 4) {
            PyErr_Format(PyExc_ValueError,
                         "set_framing(): 'prefix' must be 1, 2 or 4, got %d",
                         prefix);
            goto done;
        }
        if (max_length < 0) {
            PyErr_Format(PyExc_ValueError,
                         "set_framing(): 'max_length' must be >= 0, got %zd",
                         max_length);
            goto done;
        }
        if (!PyCallable_Check(on_frame) || !PyCallable_Check(on_too_long)) {
            PyErr_SetString(PyExc_TypeError,
                            "set_framing(): 'on_frame' and 'on_too_long' "
                            "must be callable");
            goto done;
        }
        f = PyMem_Calloc(1, sizeof(*f));
        if (f == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        f->mode = mode;
        if (mode == FRAME_LINE) {
            memcpy(f->delim, delim.buf, (size_t)delim.len);
            f->delim_len = (size_t)delim.len;
        }
        f->width = prefix;
        f->max_length = (size_t)max_length;
        f->on_frame = Py_NewRef(on_frame);
        f->on_too_long = Py_NewRef(on_too_long);
    }
    framing_free(t);
    t->framing = f;
    t->framing_gen++;
    if (extra.buf != NULL && extra.len > 0 &&
        unread(t, extra.buf, (size_t)extra.len) < 0) {
        goto done;
    }
    if (t->inbuf.len > 0) {
        transport_queue_data(t);   /* what waited goes the new way */
    }
    ret = Py_NewRef(Py_None);
done:
    if (delim.buf != NULL) {
        PyBuffer_Release(&delim);
    }
    if (extra.buf != NULL) {
        PyBuffer_Release(&extra);
    }
    return ret;
}

PyObject *
transport_write_line(TransportObject *t, PyObject *line)
{
    framing_t *f = t->framing;
    if (f == NULL || f->mode != FRAME_LINE) {
        PyErr_SetString(PyExc_RuntimeError,
                        "write_line(): the transport has no line framing "
                        "(set_framing(..., delimiter=...))");
        return NULL;
    }
    int rc;
    if (PyBytes_CheckExact(line)) {
        rc = transport_write_two(t, PyBytes_AS_STRING(line),
                                 (size_t)PyBytes_GET_SIZE(line), f->delim,
                                 f->delim_len);
    } else {
        Py_buffer view;
        if (PyObject_GetBuffer(line, &view, PyBUF_SIMPLE) < 0) {
            PyErr_Format(PyExc_TypeError,
                         "write_line(): 'line' must be a bytes-like object, "
                         "got %.100s", Py_TYPE(line)->tp_name);
            return NULL;
        }
        rc = transport_write_two(t, view.buf, (size_t)view.len, f->delim,
                                 f->delim_len);
        PyBuffer_Release(&view);
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}
