/* The batch: C callbacks of one loop iteration queue Python events without
 * the GIL; dispatch_ready() (the loop's after-iteration hook) takes the GIL
 * once, runs every queued event and call_soon callback, drops it, and then
 * flushes the transports' write buffers with the GIL released. */
#include "state.h"
#include "worker_gil.h"

int
pyevents_push(ReactorObject *r, pyevent_kind_t kind, PyObject *obj,
              void *ptr, int status)
{
    pyevent_queue_t *q = &r->events;
    if (q->len == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 256;
        pyevent_t *items = realloc(q->items, cap * sizeof(*items));
        if (items == NULL) {
            return -ENOMEM;
        }
        q->items = items;
        q->cap = cap;
    }
    pyevent_t *ev = &q->items[q->len++];
    ev->kind = kind;
    ev->status = status;
    ev->obj = obj;
    ev->ptr = ptr;
    return 0;
}

void
reactor_mark_dirty(ReactorObject *r, TransportObject *t)
{
    if (!t->dirty_listed) {
        t->dirty_listed = true;
        t->next_dirty = r->dirty;
        r->dirty = t;
    }
}

/* GIL: none.  Hands every transport's buffered writes to its stream. */
void
reactor_flush(ReactorObject *r)
{
    while (r->dirty != NULL) {
        TransportObject *t = r->dirty;
        r->dirty = t->next_dirty;
        t->next_dirty = NULL;
        t->dirty_listed = false;
        transport_flush(t);
    }
}

static void
run_event(ReactorObject *r, pyevent_t *ev)
{
    switch (ev->kind) {
    case PYEV_DATA:
    case PYEV_EOF:
    case PYEV_CLOSED:
    case PYEV_PAUSE:
    case PYEV_RESUME:
    case PYEV_CONNECTED:
        transport_dispatch(r, ev);
        break;
    case PYEV_ACCEPT:
    case PYEV_ACCEPT_ERROR:
    case PYEV_LISTENER_CLOSED:
        listener_dispatch(r, ev);
        break;
    case PYEV_TIMER:
        timer_dispatch(r, ev);
        break;
    case PYEV_DATAGRAM:
    case PYEV_UDP_ERROR:
    case PYEV_UDP_CLOSED:
        udp_dispatch(r, ev);
        break;
    case PYEV_TASK_DONE:
        cpu_task_dispatch(r, ev);
        break;
    case PYEV_NATIVE_DONE:
        native_dispatch(r, ev);
        break;
    case PYEV_FD:
    case PYEV_FD_CLOSED:
        fdwatch_dispatch(r, ev);
        break;
    case PYEV_PROC_START:
    case PYEV_PROC_DATA:
    case PYEV_PROC_PIPE_CLOSED:
    case PYEV_PROC_EXITED:
    case PYEV_PROC_CLOSED:
    case PYEV_PROC_FLOW:
        process_dispatch(r, ev);
        break;
    case PYEV_SENDFILE_DONE:
        sendfile_dispatch(r, ev);
        break;
    case PYEV_CALL: {
        PyObject *fn = PyTuple_GET_ITEM(ev->obj, 0);
        PyObject *args = PyTuple_GET_ITEM(ev->obj, 1);
        PyObject *res = PyObject_Call(fn, args, NULL);
        if (res == NULL) {
            reactor_report(r, "a call_from_thread callback");
        }
        Py_XDECREF(res);
        Py_DECREF(ev->obj);
        break;
    }
    case PYEV_SIGNAL:
        if (ev->status == 0) {
            /* Python-level handlers (KeyboardInterrupt for Ctrl-C). */
            if (PyErr_CheckSignals() < 0) {
                reactor_report(r, "a signal handler");
            }
        } else {
            reactor_run_signal(r, ev->status);
        }
        break;
    case PYEV_RELEASE:
        Py_DECREF(ev->obj);
        break;
    }
}

static void
run_soon_batch(ReactorObject *r)
{
    if (r->soon_len == 0) {
        return;
    }
    PyObject **batch = r->soon;
    size_t len = r->soon_len;
    r->soon = NULL;
    r->soon_len = r->soon_cap = 0;
    for (size_t i = 0; i < len; i += 2) {
        PyObject *res = PyObject_Call(batch[i], batch[i + 1], NULL);
        if (res == NULL) {
            reactor_report(r, "a call_soon callback");
        }
        Py_XDECREF(res);
        Py_DECREF(batch[i]);
        Py_DECREF(batch[i + 1]);
    }
    PyMem_Free(batch);
}

static void
wake_next_iteration(void *arg)
{
    (void)arg;
}

/* GIL: takes.  Hooked as the loop's after-iteration callback while run()
 * has dropped the GIL. */
void
dispatch_ready(void *arg)
{
    ReactorObject *r = arg;
    if (r->events.len > 0 || r->soon_len > 0) {
        /* On one CPU, a worker woken while this thread holds the GIL
         * would only preempt it and block on the GIL: wake it after. */
        tc_pool_defer_wakes_begin();
        worker_gil_loop_wait_begin();
        PyEval_RestoreThread(r->saved_tstate);
        worker_gil_loop_wait_end();
        r->in_dispatch = true;
        pyevent_queue_t batch = r->events;
        r->events = r->events_spare;
        r->events.len = 0;
        for (size_t i = 0; i < batch.len; i++) {
            run_event(r, &batch.items[i]);
        }
        batch.len = 0;
        r->events_spare = batch;
        run_soon_batch(r);
        r->in_dispatch = false;
        r->saved_tstate = PyEval_SaveThread();
        tc_pool_defer_wakes_end();
    }
    reactor_flush(r);
    /* Work queued by this batch must not wait on epoll. */
    if (r->events.len > 0 || r->soon_len > 0) {
        tc_loop_call_soon(r->loop, wake_next_iteration, NULL);
    }
}

/* GIL: held.  Drop what the queue owns without running it (dealloc). */
void
dispatch_discard(ReactorObject *r)
{
    for (size_t i = 0; i < r->events.len; i++) {
        pyevent_t *ev = &r->events.items[i];
        if (ev->kind == PYEV_CALL || ev->kind == PYEV_RELEASE) {
            Py_DECREF(ev->obj);
        } else if (ev->kind == PYEV_DATAGRAM) {
            free(ev->ptr);
        } else if (ev->kind == PYEV_TASK_DONE) {
            cpu_task_discard(ev->ptr);
        } else if (ev->kind == PYEV_NATIVE_DONE) {
            native_discard(ev->ptr);
        } else if (ev->kind == PYEV_SENDFILE_DONE) {
            sendfile_discard(ev->ptr);
        }
    }
    r->events.len = 0;
    for (size_t i = 0; i < r->soon_len; i++) {
        Py_DECREF(r->soon[i]);
    }
    PyMem_Free(r->soon);
    r->soon = NULL;
    r->soon_len = r->soon_cap = 0;
}
