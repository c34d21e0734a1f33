/* The hot half of twincore.StreamReader in C: feed_data(), readline() and
 * `async for line in reader`.
 *
 * A line echo server spends its Python time on three calls per line: the
 * transport's data_received (feed_data), the coroutine that waits for the
 * line, and the step that resumes it.  In Python the first two were frames
 * of their own and a coroutine object per line.  Here _StreamReaderBase
 * keeps the reader's fields in C slots (the Python subclass, streams.py,
 * reads and writes them by their old names) and readline()/__anext__
 * return a _ReadLine: an awaitable that takes a whole line from the
 * buffer without a frame, or waits for one on a twincore Future the
 * task step resumes it from, or (EOF, an error, a line over the limit)
 * hands the call to the subclass's Python code, _readline_slow() or
 * _anext_slow(), and relays it.  A ready line comes back through am_send
 * with no StopIteration made.
 *
 * The rules are streams.py's: a line is up to and including b"\n", at
 * most `limit` bytes before it; when the buffer holds more than twice the
 * limit the transport stops reading, and reads again once the buffer is
 * down to the limit; one coroutine at a time may wait for data.
 *
 * Also here, for the writer's side of the same loop: _ready, the done
 * awaitable StreamWriter.drain() returns when it need not wait.
 * GIL: held throughout; the reactor's thread. */
#include "errors.h"
#include "future.h"
#include "module.h"
#include "streamreader.h"

typedef struct StreamReaderObject {
    PyObject_HEAD
    PyObject *buffer;       /* bytearray, made by tp_new, never replaced */
    PyObject *waiter;       /* the Future a read waits on, or None */
    PyObject *exception;    /* set_exception()'s, or None */
    PyObject *transport;    /* or None */
    PyObject *reactor;      /* or None */
    Py_ssize_t limit;
    char eof;
    char paused;            /* the transport's reading, paused by us */
    tc_state *st;           /* the module's: alive while the type is */
} StreamReaderObject;       /* the Python subclass adds __dict__ */

enum { MODE_READLINE, MODE_ANEXT };

typedef struct ReadLineObject {
    PyObject_HEAD
    StreamReaderObject *reader;
    PyObject *waiting;      /* the Future this read waits on, or NULL */
    PyObject *delegate;     /* the slow path's coroutine, or NULL */
    int mode;
    bool finished;
} ReadLineObject;

static inline bool
is_none(PyObject *obj)
{
    return obj == NULL || obj == Py_None;
}

static int
call_transport(StreamReaderObject *r, const char *method)
{
    PyObject *res = PyObject_CallMethod(r->transport, method, NULL);
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

/* ---- the reader's C methods ---------------------------------------------- */

static PyObject *
StreamReader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    PyObject *module = PyType_GetModuleByDef(type, &tc_module);
    if (module == NULL) {
        return NULL;
    }
    StreamReaderObject *r = (StreamReaderObject *)type->tp_alloc(type, 0);
    if (r == NULL) {
        return NULL;
    }
    r->st = state_of_module(module);
    r->buffer = PyByteArray_FromStringAndSize(NULL, 0);
    if (r->buffer == NULL) {
        Py_DECREF(r);
        return NULL;
    }
    r->waiter = Py_NewRef(Py_None);
    r->exception = Py_NewRef(Py_None);
    r->transport = Py_NewRef(Py_None);
    r->reactor = Py_NewRef(Py_None);
    r->limit = 1 << 16;
    return (PyObject *)r;
}

/* Settles and forgets the waiter, if any (_wakeup_waiter). */
static int
wake_waiter(StreamReaderObject *r)
{
    if (is_none(r->waiter)) {
        return 0;
    }
    bool is_future = future_check(r->st, r->waiter);
    /* Fed from another thread: the error its set_result() raises. */
    if (is_future && future_check_owner(r->waiter, "set_result") < 0) {
        return -1;
    }
    PyObject *waiter = r->waiter;
    r->waiter = Py_NewRef(Py_None);
    int rc = 0;
    if (is_future) {
        if (future_is_pending(waiter)) {
            rc = future_set_result(waiter, Py_None);
        }
    } else {   /* something else set as _waiter: its own methods */
        PyObject *done = PyObject_CallMethod(waiter, "done", NULL);
        int is_done = done != NULL ? PyObject_IsTrue(done) : -1;
        Py_XDECREF(done);
        PyObject *res = is_done == 0 ? PyObject_CallMethod(
                                           waiter, "set_result", "O", Py_None)
                                     : NULL;
        rc = is_done < 0 || (is_done == 0 && res == NULL) ? -1 : 0;
        Py_XDECREF(res);
    }
    Py_DECREF(waiter);
    return rc;
}

static PyObject *
StreamReader_feed_data(StreamReaderObject *r, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Py_ssize_t old = PyByteArray_GET_SIZE(r->buffer);
    if (view.len > PY_SSIZE_T_MAX - old) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    if (view.len > 0) {
        if (PyByteArray_Resize(r->buffer, old + view.len) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        memcpy(PyByteArray_AS_STRING(r->buffer) + old, view.buf,
               (size_t)view.len);
    }
    PyBuffer_Release(&view);
    if (wake_waiter(r) < 0) {
        return NULL;
    }
    if (!r->paused && !is_none(r->transport) &&
        PyByteArray_GET_SIZE(r->buffer) - r->limit > r->limit) {
        /* over twice the limit (written so a huge limit cannot overflow) */
        r->paused = 1;
        if (call_transport(r, "pause_reading") < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* 1 with *line set: a whole line was taken.  0: wait for more data.
 * 2: the slow path decides (EOF, an error, the limit).  -1: error. */
static int
take_line(StreamReaderObject *r, PyObject **line)
{
    if (!is_none(r->exception)) {
        return 2;
    }
    PyObject *buf = r->buffer;
    Py_ssize_t len = PyByteArray_GET_SIZE(buf);
    const char *data = PyByteArray_AS_STRING(buf);
    const char *nl = len > 0 ? memchr(data, '\n', (size_t)len) : NULL;
    if (nl == NULL) {
        return r->eof || len > r->limit ? 2 : 0;
    }
    Py_ssize_t i = nl - data;
    if (i > r->limit) {
        return 2;
    }
    *line = PyBytes_FromStringAndSize(data, i + 1);
    if (*line == NULL) {
        return -1;
    }
    int rc = i + 1 == len ? PyByteArray_Resize(buf, 0)
                          : PySequence_DelSlice(buf, 0, i + 1);
    if (rc == 0 && r->paused && PyByteArray_GET_SIZE(buf) <= r->limit) {
        r->paused = 0;
        rc = call_transport(r, "resume_reading");
    }
    if (rc < 0) {
        Py_CLEAR(*line);
        return -1;
    }
    return 1;
}

static PyObject *
read_line_new(StreamReaderObject *r, int mode)
{
    if (r->st->ReadLine_type == NULL) {   /* the module is being torn down */
        PyErr_SetString(PyExc_RuntimeError, "twincore is shutting down");
        return NULL;
    }
    ReadLineObject *rl = PyObject_GC_New(ReadLineObject,
                                         r->st->ReadLine_type);
    if (rl == NULL) {
        return NULL;
    }
    rl->reader = (StreamReaderObject *)Py_NewRef(r);
    rl->waiting = NULL;
    rl->delegate = NULL;
    rl->mode = mode;
    rl->finished = false;
    PyObject_GC_Track(rl);
    return (PyObject *)rl;
}

static PyObject *
StreamReader_readline(StreamReaderObject *r, PyObject *unused)
{
    (void)unused;
    return read_line_new(r, MODE_READLINE);
}

static PyObject *
StreamReader_anext(StreamReaderObject *r)
{
    return read_line_new(r, MODE_ANEXT);
}

static PyObject *
StreamReader_aiter(StreamReaderObject *r)
{
    return Py_NewRef((PyObject *)r);
}

/* ---- _ReadLine: the awaitable -------------------------------------------- */

/* The read stops waiting: the reader forgets its waiter (a finally in the
 * Python version). */
static void
stop_waiting(ReadLineObject *rl)
{
    if (rl->waiting == NULL) {
        return;
    }
    StreamReaderObject *r = rl->reader;
    if (r->waiter == rl->waiting) {
        Py_SETREF(r->waiter, Py_NewRef(Py_None));
    }
    Py_CLEAR(rl->waiting);
}

static PySendResult
finish(ReadLineObject *rl, PySendResult res)
{
    if (res != PYGEN_NEXT) {
        rl->finished = true;
        Py_CLEAR(rl->delegate);
    }
    return res;
}

/* Hands the read to the Python slow path and runs it to its first yield. */
static PySendResult
delegate(ReadLineObject *rl, PyObject **result)
{
    rl->delegate = PyObject_CallMethod(
        (PyObject *)rl->reader,
        rl->mode == MODE_ANEXT ? "_anext_slow" : "_readline_slow", NULL);
    if (rl->delegate == NULL) {
        *result = NULL;
        return finish(rl, PYGEN_ERROR);
    }
    return finish(rl, PyIter_Send(rl->delegate, Py_None, result));
}

static PySendResult
ReadLine_am_send(ReadLineObject *rl, PyObject *value, PyObject **result)
{
    *result = NULL;
    if (rl->finished) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot reuse an already awaited readline()");
        return PYGEN_ERROR;
    }
    if (rl->delegate != NULL) {
        return finish(rl, PyIter_Send(rl->delegate, value, result));
    }
    stop_waiting(rl);   /* resumed: the waiter came, with data or EOF */
    StreamReaderObject *r = rl->reader;
    PyObject *line = NULL;
    int got = take_line(r, &line);
    if (got == 1) {
        *result = line;
        return finish(rl, PYGEN_RETURN);
    }
    if (got < 0) {
        return finish(rl, PYGEN_ERROR);
    }
    if (got == 2 || is_none(r->reactor)) {
        return delegate(rl, result);
    }
    if (!is_none(r->waiter)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "readline() called while another coroutine is "
                        "already waiting for incoming data");
        return finish(rl, PYGEN_ERROR);
    }
    if (r->paused) {   /* the line needs more than the buffer holds */
        r->paused = 0;
        if (call_transport(r, "resume_reading") < 0) {
            return finish(rl, PYGEN_ERROR);
        }
    }
    PyObject *fut = future_new(r->st, r->reactor);
    if (fut == NULL) {
        return finish(rl, PYGEN_ERROR);
    }
    Py_SETREF(r->waiter, Py_NewRef(fut));
    rl->waiting = Py_NewRef(fut);
    *result = fut;
    return PYGEN_NEXT;
}

/* The generator protocol on top of am_send (3.12+ await uses it). */
static PyObject *
send_value(ReadLineObject *rl, PyObject *value)
{
    PyObject *result;
    PySendResult res = ReadLine_am_send(rl, value, &result);
    if (res != PYGEN_RETURN) {
        return result;   /* yielded, or NULL with the error set */
    }
    if (result == Py_None) {
        Py_DECREF(result);
        PyErr_SetNone(PyExc_StopIteration);
        return NULL;
    }
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
    Py_DECREF(result);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

static PyObject *
ReadLine_iternext(ReadLineObject *rl)
{
    return send_value(rl, Py_None);
}

static PyObject *
ReadLine_send(ReadLineObject *rl, PyObject *value)
{
    return send_value(rl, value);
}

/* throw(exc) while waiting: a cancel, or the reader's error through its
 * waiter; the read ends with it. */
static PyObject *
ReadLine_throw(ReadLineObject *rl, PyObject *args)
{
    if (rl->delegate != NULL && !rl->finished) {
        PyObject *meth = PyObject_GetAttrString(rl->delegate, "throw");
        PyObject *res = meth != NULL ? PyObject_Call(meth, args, NULL) : NULL;
        Py_XDECREF(meth);
        if (res == NULL) {
            rl->finished = true;   /* StopIteration too: it returned */
            Py_CLEAR(rl->delegate);
        }
        return res;
    }
    stop_waiting(rl);
    rl->finished = true;
    return tcpy_raise_thrown(args);
}

static PyObject *
ReadLine_close(ReadLineObject *rl, PyObject *unused)
{
    (void)unused;
    stop_waiting(rl);
    rl->finished = true;
    if (rl->delegate != NULL) {
        PyObject *delegate = rl->delegate;
        rl->delegate = NULL;
        PyObject *res = PyObject_CallMethod(delegate, "close", NULL);
        Py_DECREF(delegate);
        return res;
    }
    Py_RETURN_NONE;
}

static PyObject *
ReadLine_await(ReadLineObject *rl)
{
    return Py_NewRef((PyObject *)rl);
}

static int
ReadLine_traverse(ReadLineObject *rl, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(rl));
    Py_VISIT(rl->reader);
    Py_VISIT(rl->waiting);
    Py_VISIT(rl->delegate);
    return 0;
}

static int
ReadLine_clear(ReadLineObject *rl)
{
    Py_CLEAR(rl->waiting);
    Py_CLEAR(rl->delegate);
    Py_CLEAR(rl->reader);
    return 0;
}

static void
ReadLine_dealloc(ReadLineObject *rl)
{
    PyTypeObject *type = Py_TYPE(rl);
    PyObject_GC_UnTrack(rl);
    if (rl->reader != NULL) {
        stop_waiting(rl);   /* dropped while waiting (its task closed) */
    }
    ReadLine_clear(rl);
    PyObject_GC_Del(rl);
    Py_DECREF(type);
}

static PyMethodDef ReadLine_methods[] = {
    {"send", (PyCFunction)ReadLine_send, METH_O, NULL},
    {"throw", (PyCFunction)ReadLine_throw, METH_VARARGS, NULL},
    {"close", (PyCFunction)ReadLine_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot ReadLine_slots[] = {
    {Py_tp_doc, "The awaitable of StreamReader.readline() and of "
                "`async for`; internal."},
    {Py_tp_dealloc, ReadLine_dealloc},
    {Py_tp_traverse, ReadLine_traverse},
    {Py_tp_clear, ReadLine_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, ReadLine_iternext},
    {Py_tp_methods, ReadLine_methods},
    {Py_am_await, ReadLine_await},
    {Py_am_send, ReadLine_am_send},
    {0, NULL},
};

PyType_Spec ReadLine_spec = {
    .name = "twincore._twincore._ReadLine",
    .basicsize = sizeof(ReadLineObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ReadLine_slots,
};

/* ---- _Ready: an awaitable already done ------------------------------------ */

/* StreamWriter.drain() returns the one _Ready when nothing is to wait for:
 * `await writer.drain()` then makes no coroutine.  It has no state, so
 * one object serves every await at once. */
static PySendResult
Ready_am_send(PyObject *self, PyObject *value, PyObject **result)
{
    (void)self;
    (void)value;
    *result = Py_NewRef(Py_None);
    return PYGEN_RETURN;
}

static PyObject *
Ready_iternext(PyObject *self)
{
    (void)self;
    return NULL;   /* exhausted, no error set: the await's value is None */
}

static PyObject *
Ready_send(PyObject *self, PyObject *value)
{
    (void)self;
    (void)value;
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
}

static PyObject *
Ready_throw(PyObject *self, PyObject *args)
{
    (void)self;
    return tcpy_raise_thrown(args);
}

static PyObject *
Ready_close(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    Py_RETURN_NONE;
}

static PyObject *
Ready_repr(PyObject *self)
{
    (void)self;
    return PyUnicode_FromString("<twincore ready awaitable>");
}

static void
Ready_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyMethodDef Ready_methods[] = {
    {"send", (PyCFunction)Ready_send, METH_O, NULL},
    {"throw", (PyCFunction)Ready_throw, METH_VARARGS, NULL},
    {"close", (PyCFunction)Ready_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Ready_slots[] = {
    {Py_tp_doc, "An awaitable that is done: `await` gives None at once; "
                "internal."},
    {Py_tp_dealloc, Ready_dealloc},
    {Py_tp_repr, Ready_repr},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, Ready_iternext},
    {Py_tp_methods, Ready_methods},
    {Py_am_await, PyObject_SelfIter},
    {Py_am_send, Ready_am_send},
    {0, NULL},
};

static PyType_Spec Ready_spec = {
    .name = "twincore._twincore._Ready",
    .basicsize = sizeof(PyObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Ready_slots,
};

int
streams_module_add(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &Ready_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    PyObject *ready = PyType_GenericAlloc((PyTypeObject *)type, 0);
    Py_DECREF(type);
    if (ready == NULL) {
        return -1;
    }
    int rc = PyModule_AddObjectRef(module, "_ready", ready);
    Py_DECREF(ready);
    return rc;
}

/* ---- _StreamReaderBase: the type ------------------------------------------ */

static int
StreamReader_traverse(StreamReaderObject *r, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(r));
    Py_VISIT(r->buffer);
    Py_VISIT(r->waiter);
    Py_VISIT(r->exception);
    Py_VISIT(r->transport);
    Py_VISIT(r->reactor);
    return 0;
}

static int
StreamReader_clear(StreamReaderObject *r)
{
    Py_CLEAR(r->waiter);
    Py_CLEAR(r->exception);
    Py_CLEAR(r->transport);
    Py_CLEAR(r->reactor);
    return 0;
}

static void
StreamReader_dealloc(StreamReaderObject *r)
{
    PyTypeObject *type = Py_TYPE(r);
    PyObject_GC_UnTrack(r);
    StreamReader_clear(r);
    Py_CLEAR(r->buffer);
    type->tp_free((PyObject *)r);
    Py_DECREF(type);
}

static PyMethodDef StreamReader_methods[] = {
    {"feed_data", (PyCFunction)StreamReader_feed_data, METH_O,
     "feed_data(data, /)\n--\n\nAppend bytes that came; wakes the read "
     "waiting for them; pauses the transport over twice the limit."},
    {"readline", (PyCFunction)StreamReader_readline, METH_NOARGS,
     "readline()\n--\n\nAwaitable: up to and including b\"\\n\"; at EOF the "
     "partial line (b\"\" when none). A line over the limit raises "
     "ValueError (its bytes are dropped, as asyncio does)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef StreamReader_members[] = {
    {"_buffer", T_OBJECT, offsetof(StreamReaderObject, buffer), READONLY,
     NULL},
    {"_waiter", T_OBJECT, offsetof(StreamReaderObject, waiter), 0, NULL},
    {"_exception", T_OBJECT, offsetof(StreamReaderObject, exception), 0,
     NULL},
    {"_transport", T_OBJECT, offsetof(StreamReaderObject, transport), 0,
     NULL},
    {"_reactor", T_OBJECT, offsetof(StreamReaderObject, reactor), 0, NULL},
    {"_limit", T_PYSSIZET, offsetof(StreamReaderObject, limit), 0, NULL},
    {"_eof", T_BOOL, offsetof(StreamReaderObject, eof), 0, NULL},
    {"_paused", T_BOOL, offsetof(StreamReaderObject, paused), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot StreamReader_slots[] = {
    {Py_tp_doc, "The C half of twincore.StreamReader; internal."},
    {Py_tp_new, StreamReader_new},
    {Py_tp_dealloc, StreamReader_dealloc},
    {Py_tp_traverse, StreamReader_traverse},
    {Py_tp_clear, StreamReader_clear},
    {Py_tp_methods, StreamReader_methods},
    {Py_tp_members, StreamReader_members},
    {Py_am_aiter, StreamReader_aiter},
    {Py_am_anext, StreamReader_anext},
    {0, NULL},
};

PyType_Spec StreamReader_spec = {
    .name = "twincore._twincore._StreamReaderBase",
    .basicsize = sizeof(StreamReaderObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = StreamReader_slots,
};
