/* The batch (dispatch.c): the reactor's queue of Python events and the
 * after-iteration hook that runs it.
 *
 * C callbacks of the loop run without the GIL and only append an event:
 * C memory, no Python calls, no refcounts.  Each event carries the const
 * table of the file that queued it (its run, discard and traverse), so
 * the dispatcher knows no kind of event: a new kind is a table in the
 * file that owns it, as each type of handle has its own in src/. */
#ifndef TWINCORE_PYMOD_DISPATCH_H
#define TWINCORE_PYMOD_DISPATCH_H

#include "module.h"

typedef struct ReactorObject ReactorObject;       /* reactor.h */
typedef struct TransportObject TransportObject;   /* transport.h */
typedef struct pyevent pyevent_t;

/* What a kind of event does; one static const table per kind, in the file
 * that queues it. */
typedef struct pyevent_ops {
    /* GIL: held, reactor thread.  Run the event in the batch; it then
     * owns nothing any more. */
    void (*run)(ReactorObject *r, pyevent_t *ev);
    /* GIL: held.  Drop what the event owns without running it (the
     * reactor closes).  NULL: it owns nothing. */
    void (*discard)(ReactorObject *r, pyevent_t *ev);
    /* Visit the Python objects the event owns (Reactor_traverse).  NULL:
     * it owns none. */
    int (*traverse)(pyevent_t *ev, visitproc visit, void *arg);
    const char *name;           /* for debuggers */
} pyevent_ops_t;

struct pyevent {
    const pyevent_ops_t *ops;
    int kind;                   /* the owner's own sub-kind, or 0 */
    int status;
    PyObject *obj;              /* borrowed unless the owner says owned */
    void *ptr;
};

typedef struct pyevent_queue {
    pyevent_t *items;
    size_t len, cap;
} pyevent_queue_t;

/* GIL: any, Thread: loop.  Queue an event for r's next batch; ops is a
 * static table of the caller's file.  Returns 0 or -ENOMEM (nothing
 * queued). */
int pyevents_push(ReactorObject *r, const pyevent_ops_t *ops, int kind,
                  PyObject *obj, void *ptr, int status);
/* The loop's after-iteration hook while run() has dropped the GIL, which
 * it takes back once per batch (dispatch.c); arg is the reactor. */
void dispatch_ready(void *arg);
/* GIL: held.  Drop what the queue owns without running it (teardown). */
void dispatch_discard(ReactorObject *r);
/* Visit what the queued events own. */
int dispatch_traverse(ReactorObject *r, visitproc visit, void *arg);
/* GIL: held.  t has writes to hand to its stream after the batch. */
void reactor_mark_dirty(ReactorObject *r, TransportObject *t);
/* GIL: none.  Hand every dirty transport's writes to its stream. */
void reactor_flush(ReactorObject *r);

#endif
