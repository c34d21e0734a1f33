/* The batch: C callbacks of one loop iteration queue Python events without
 * the GIL; dispatch_ready() (the loop's after-iteration hook) takes the GIL
 * once, runs every queued event and call_soon callback, drops it, and then
 * flushes the transports' write buffers with the GIL released.  An event
 * runs, is discarded or is traversed through its own table (dispatch.h):
 * nothing here knows what kinds of events there are. */
#include "dispatch.h"
#include "reactor.h"
#include "transport.h"
#include "worker_gil.h"

int
pyevents_push(ReactorObject *r, const pyevent_ops_t *ops, int kind,
              PyObject *obj, void *ptr, int status)
{
    assert(ops != NULL && ops->run != NULL);
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
    ev->ops = ops;
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
            pyevent_t *ev = &batch.items[i];
            ev->ops->run(r, ev);
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
        if (ev->ops->discard != NULL) {
            ev->ops->discard(r, ev);
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

/* Only while the reactor does not run: the loop thread then pushes without
 * the GIL, and run() holds a reference that keeps the reactor (and all it
 * owns) reachable anyway. */
int
dispatch_traverse(ReactorObject *r, visitproc visit, void *arg)
{
    for (size_t i = 0; i < r->events.len; i++) {
        pyevent_t *ev = &r->events.items[i];
        if (ev->ops->traverse != NULL) {
            int rc = ev->ops->traverse(ev, visit, arg);
            if (rc != 0) {
                return rc;
            }
        }
    }
    return 0;
}
