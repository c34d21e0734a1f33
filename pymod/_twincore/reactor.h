/* The Reactor (reactor.c): one tc_loop_t, the event queue it runs in
 * batches (dispatch.h), and the list of the objects its handles hold. */
#ifndef TWINCORE_PYMOD_REACTOR_H
#define TWINCORE_PYMOD_REACTOR_H

#include <pthread.h>

#include "dispatch.h"

struct CpuTaskObject;   /* cpu.c */

/* An entry on the reactor's list of the Python objects that C handles of
 * its loop hold a strong reference to: a Transport, Listener or
 * DatagramTransport until its close is dispatched, an armed TimerHandle.
 * reactor -> loop -> handle -> object -> reactor is a cycle the GC cannot
 * see through C; the list lets Reactor_traverse show it that reference and
 * reactor_teardown() take it back.  Each object embeds its own entry. */
typedef struct loopref {
    struct loopref *prev, *next;
    PyObject *obj;              /* NULL when not listed */
    /* GIL: held.  Close the object's C handle if it is not closing yet,
     * make its callbacks find no object, and forget the handle.  Runs no
     * Python code and keeps the reference (the caller drops it). */
    void (*detach)(PyObject *obj);
} loopref_t;

struct ReactorObject {
    PyObject_HEAD
    PyObject *module;           /* strong: keeps the state alive */
    tc_loop_t *loop;
    PyThreadState *saved_tstate;   /* while run() has dropped the GIL */
    pyevent_queue_t events, events_spare;
    PyObject **soon;            /* pairs (fn, args), owned */
    size_t soon_len, soon_cap;
    TransportObject *dirty;     /* transports with unflushed writes */
    /* Python's signal wakeup fd while run() runs (unless the host has its
     * own): a socketpair made once, read by a poll handle during runs. */
    tc_poll_t *wakeup_poll;
    int wakeup_read_fd, wakeup_write_fd;
    PyObject *signal_handlers;  /* dict signum -> (fn, args, handle) */
    PyObject *cpu_pool;         /* the default CpuPool, or NULL */
    PyObject *pending_exc;      /* KeyboardInterrupt etc. to re-raise */
    bool running;
    bool stopping;
    bool stop_pending;          /* stop() before run(): run() returns */
    bool has_run;               /* the first run() adopts the loop */
    bool in_dispatch;
    loopref_t *held;            /* the objects the loop's handles hold */
    PyObject *fd_watchers;      /* dict fd -> _FdWatcher, or NULL */
    /* guards: transit, and loop going NULL (workers read it) */
    pthread_mutex_t transit_lock;
    bool transit_lock_ready;
    struct CpuTaskObject *transit;  /* finished tasks sent to the loop */
    PyObject *weakreflist;
};

extern PyType_Spec Reactor_spec;

int reactor_check_thread(ReactorObject *r);
/* GIL: held.  Log the current exception; KeyboardInterrupt/SystemExit
 * stop the reactor and are re-raised by run(). */
void reactor_report(ReactorObject *r, const char *context);
/* GIL: held.  Validate and open a TCP listening socket for a Listener;
 * what names the method in errors.  Returns 0, or -1 with an exception. */
int reactor_listen_server(ReactorObject *r, const char *what,
                          const char *host, int port, int backlog,
                          int reuse_port, tc_server_t **out);
static inline tc_state *
reactor_state(ReactorObject *r)
{
    return state_of_module(r->module);
}
int reactor_call_soon_obj(ReactorObject *r, PyObject *fn, PyObject *args);
/* GIL: held.  A handle of r's loop now holds a new reference to obj:
 * take it and list ref (obj's own entry). */
void reactor_hold(ReactorObject *r, loopref_t *ref, PyObject *obj,
                  void (*detach)(PyObject *obj));
/* GIL: held.  Unlist ref and return the reference the handle held (the
 * caller drops it), or NULL when ref is not listed (never held, or taken
 * back by reactor_teardown()). */
PyObject *reactor_unhold(ReactorObject *r, loopref_t *ref);
/* Make sure the loop's next poll does not block (work queued outside a
 * batch).  GIL: any. */
void reactor_wake(ReactorObject *r);
void reactor_sync_resolver(ReactorObject *r);

#endif
