/* Shared declarations of the extension twincore._twincore: module state,
 * the object layouts several files touch, and the dispatch queue.
 *
 * Threads and the GIL: every object here belongs to one reactor's loop
 * thread.  C callbacks from the loop run without the GIL and only append
 * to the reactor's event queue (C memory, no Python calls, no refcounts);
 * dispatch_ready() takes the GIL once per iteration and runs them all. */
#ifndef TWINCORE_PYMOD_STATE_H
#define TWINCORE_PYMOD_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>   /* PyMemberDef, T_PYSSIZET in 3.11 */
#include <pthread.h>
#include <stdbool.h>

#include <twincore.h>
#include <twincore/pool.h>
#include <twincore/resolve.h>

typedef struct tc_state {
    PyTypeObject *Reactor_type;
    PyTypeObject *Transport_type;
    PyTypeObject *Listener_type;
    PyTypeObject *TimerHandle_type;
    PyTypeObject *DatagramTransport_type;
    PyTypeObject *CpuPool_type;
    PyTypeObject *CpuTask_type;
    PyTypeObject *Future_type;
    PyTypeObject *FutureIter_type;
    PyTypeObject *TLSContext_type;
    PyTypeObject *FdWatcher_type;
    PyTypeObject *ProcessTransport_type;
    PyTypeObject *InterpreterPool_type;   /* 3.12+ (interp.c), else NULL */
    PyObject *CancelledError;   /* asyncio's, so both kinds of code catch it */
    PyObject *InvalidStateError;
    PyObject *Error;            /* twincore.Error(OSError): codes errno lacks */
    PyObject *logger;           /* logging.getLogger("twincore") */
    /* Interned method names for the hot paths. */
    PyObject *str_data_received;
    PyObject *str_eof_received;
    PyObject *str_connection_made;
    PyObject *str_connection_lost;
    PyObject *str_pause_writing;
    PyObject *str_resume_writing;
    PyObject *str_build_protocol;
    PyObject *str_datagram_received;
    PyObject *str_error_received;
} tc_state;

extern PyModuleDef tc_module;

static inline tc_state *
state_of_module(PyObject *module)
{
    return (tc_state *)PyModule_GetState(module);
}

static inline tc_state *
state_of_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &tc_module);
    return module != NULL ? state_of_module(module) : NULL;
}

/* A growable byte buffer in C memory. */
typedef struct bytebuf {
    char *data;
    size_t len, cap;
} bytebuf_t;

int bytebuf_append(bytebuf_t *b, const void *p, size_t n);
void bytebuf_free(bytebuf_t *b);

typedef enum pyevent_kind {
    PYEV_DATA = 1,     /* obj: Transport; its inbuf holds the bytes */
    PYEV_EOF,          /* obj: Transport */
    PYEV_CLOSED,       /* obj: Transport; the C handle is gone */
    PYEV_PAUSE,        /* obj: Transport */
    PYEV_RESUME,       /* obj: Transport */
    PYEV_ACCEPT,       /* obj: Listener; ptr: tc_stream_t*; status */
    PYEV_ACCEPT_ERROR, /* obj: Listener; status */
    PYEV_CONNECTED,    /* obj: Transport; status */
    PYEV_TIMER,        /* obj: TimerHandle; status: its generation */
    PYEV_CALL,         /* obj: tuple (fn, args) owned; from another thread */
    PYEV_DATAGRAM,     /* obj: DatagramTransport; ptr: datagram_t* */
    PYEV_UDP_ERROR,    /* obj: DatagramTransport; status */
    PYEV_UDP_CLOSED,   /* obj: DatagramTransport */
    PYEV_SIGNAL,       /* obj: NULL; status: signum */
    PYEV_TASK_DONE,    /* ptr: pytask_t* (cpu.c) */
    PYEV_RELEASE,      /* obj: owned reference to drop */
    PYEV_LISTENER_CLOSED, /* obj: Listener */
    PYEV_NATIVE_DONE,  /* ptr: native_task_t* (capi.c) */
    PYEV_FD,           /* obj: _FdWatcher; status: TC_POLL_* bits or < 0 */
    PYEV_FD_CLOSED,    /* obj: _FdWatcher; its poll handle is gone */
    /* process.c; obj: ProcessTransport; status: the pipe's fd, the
     * returncode (EXITED) or paused (FLOW) */
    PYEV_PROC_START,
    PYEV_PROC_DATA,
    PYEV_PROC_PIPE_CLOSED,
    PYEV_PROC_EXITED,
    PYEV_PROC_CLOSED,
    PYEV_PROC_FLOW,
    PYEV_SENDFILE_DONE, /* ptr: sendfile_req_t* (transport.c) */
} pyevent_kind_t;

typedef struct pyevent {
    pyevent_kind_t kind;
    int status;
    PyObject *obj;
    void *ptr;
} pyevent_t;

typedef struct pyevent_queue {
    pyevent_t *items;
    size_t len, cap;
} pyevent_queue_t;

typedef struct TransportObject TransportObject;
typedef struct framing framing_t;    /* framing.c */
struct CpuTaskObject;

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

typedef struct ReactorObject {
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
} ReactorObject;

struct TransportObject {
    PyObject_HEAD
    ReactorObject *reactor;     /* strong */
    tc_stream_t *stream;        /* NULL once closed */
    PyObject *protocol;         /* strong, NULL until connection_made */
    PyObject *factory;          /* client: to build the protocol */
    PyObject *on_connect;       /* client: callback(protocol, exc) */
    PyObject *peer, *host;      /* cached address tuples or str */
    PyObject *connect_to;       /* client: the address, for connect errors */
    PyObject *failure;          /* what a protocol method raised: the
                                 * connection is aborted and
                                 * connection_lost gets it */
    bytebuf_t inbuf, outbuf;
    TransportObject *next_dirty;
    size_t low_water, high_water;
    int error;                  /* the failure that closed it, or 0 */
    bool dirty_listed;
    bool data_queued;           /* a PYEV_DATA is in the queue */
    bool reading_paused;        /* by the protocol */
    bool writing_paused;        /* protocol was told pause_writing() */
    bool closing;               /* close()/abort() called */
    bool input_done;            /* closed by us (close, abort, EOF, a
                                 * failing protocol method): no more
                                 * data_received/eof_received */
    bool user_closed;           /* the program called close()/abort():
                                 * write() raises; else writes after the
                                 * connection is lost are dropped */
    unsigned dropped_writes;
    bool write_eof;
    bool closed;                /* PYEV_CLOSED dispatched */
    bool is_unix;
    bool eof;
    bool eof_deferred;          /* EOF waits behind paused data */
    framing_t *framing;         /* NULL: data_received; else the protocol
                                 * gets one call per frame (framing.c) */
    size_t inpos;               /* framing: bytes of inbuf delivered by the
                                 * running framing_deliver() */
    unsigned framing_gen;       /* bumped by every set_framing() */
    loopref_t held;             /* listed while the stream holds us */
    PyObject *weakreflist;
};

/* Reactor helpers (reactor.c). */
int reactor_check_thread(ReactorObject *r);
/* GIL: held.  Log the current exception; KeyboardInterrupt/SystemExit
 * stop the reactor and are re-raised by run(). */
void reactor_report(ReactorObject *r, const char *context);
void reactor_run_signal(ReactorObject *r, int signum);
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

/* Dispatch (dispatch.c). */
int pyevents_push(ReactorObject *r, pyevent_kind_t kind, PyObject *obj,
                  void *ptr, int status);
void dispatch_ready(void *arg);
void dispatch_discard(ReactorObject *r);
void reactor_mark_dirty(ReactorObject *r, TransportObject *t);
void reactor_flush(ReactorObject *r);

/* Transports (transport.c). */
PyObject *transport_new(ReactorObject *r, tc_stream_t *s, bool is_unix);
void transport_dispatch(ReactorObject *r, pyevent_t *ev);
void listener_dispatch(ReactorObject *r, pyevent_t *ev);
void transport_flush(TransportObject *t);
/* GIL: held.  The reactor was closed (reactor.c, after its loop is gone):
 * connection_lost, once, to a protocol that has not heard it yet. */
void transport_reactor_closed(PyObject *t);
void datagram_reactor_closed(PyObject *d);
extern const tc_stream_callbacks_t transport_callbacks;
void transport_on_connect(tc_stream_t *s, int status);
/* GIL: held.  A protocol method raised the current exception: log it and
 * abort the connection (connection_lost gets the exception). */
void transport_protocol_failed(TransportObject *t, const char *context);
/* GIL: held.  Have the bytes in t's input buffer delivered (PYEV_DATA). */
void transport_queue_data(TransportObject *t);

/* Framing (framing.c).  GIL: held. */
PyObject *transport_set_framing(TransportObject *t, PyObject *args,
                                PyObject *kwargs);
/* Deliver the frames in t->inbuf (t->framing != NULL). */
void framing_deliver(TransportObject *t);
/* Transport.write_line(line): line and the framing's delimiter. */
PyObject *transport_write_line(TransportObject *t, PyObject *line);
/* GIL: held.  write() of a then b: 0, or -1 with an exception (a dropped
 * write of a lost connection is 0, as for write()). */
int transport_write_two(TransportObject *t, const char *a, size_t alen,
                        const char *b, size_t blen);
void framing_free(TransportObject *t);
int framing_traverse(TransportObject *t, visitproc visit, void *arg);
void listener_on_connection(tc_server_t *server, tc_stream_t *conn,
                            int status);
void udp_on_recv(tc_udp_t *udp, const char *buf, size_t len,
                 const struct sockaddr *from, socklen_t fromlen, int status);
/* Make sure the loop's next poll does not block (work queued outside a
 * batch).  GIL: any. */
void reactor_wake(ReactorObject *r);
void reactor_sync_resolver(ReactorObject *r);

/* Descriptor watchers (fdwatch.c).  GIL: held. */
PyObject *reactor_add_reader(ReactorObject *r, PyObject *const *args,
                             Py_ssize_t nargs);
PyObject *reactor_add_writer(ReactorObject *r, PyObject *const *args,
                             Py_ssize_t nargs);
PyObject *reactor_remove_reader(ReactorObject *r, PyObject *arg);
PyObject *reactor_remove_writer(ReactorObject *r, PyObject *arg);
void fdwatch_dispatch(ReactorObject *r, pyevent_t *ev);
/* asyncio's rule for a descriptor argument: an int, or an object whose
 * fileno() returns one; what names the method in errors.  Returns 0 or -1
 * with an exception. */
int tcpy_fileno(PyObject *obj, const char *what, int *out);

/* UDP (udp.c), timers (timerhandle.c), CPU pool (cpu.c). */
void udp_dispatch(ReactorObject *r, pyevent_t *ev);
void timer_dispatch(ReactorObject *r, pyevent_t *ev);
void cpu_task_dispatch(ReactorObject *r, pyevent_t *ev);
void cpu_task_discard(void *task);
/* Visit, or discard (GIL: held), the finished tasks on their way back to
 * r's loop (r->transit). */
int cpu_transit_traverse(ReactorObject *r, visitproc visit, void *arg);
void cpu_transit_discard(ReactorObject *r);
PyObject *timerhandle_new(ReactorObject *r, double delay, PyObject *fn,
                          PyObject *args);
PyObject *listener_new(ReactorObject *r, tc_server_t *server,
                       PyObject *factory, bool is_unix);
PyObject *datagram_new(ReactorObject *r, tc_udp_t *udp, PyObject *protocol);
tc_pool_t *cpupool_native(PyObject *pool);

/* Errors (errors.c). */
PyObject *tcpy_error_object(tc_state *st, int err);
PyObject *tcpy_raise(tc_state *st, int err);
/* An error of an attempt to bind on or connect to addr ("bind on address",
 * "connect to"): the same class and errno as tcpy_error_object(), the
 * address in the message, as asyncio's.  New ref, or NULL. */
PyObject *tcpy_error_at(tc_state *st, int err, const char *attempt,
                        PyObject *addr);
/* tcpy_error_at() raised; returns NULL. */
PyObject *tcpy_raise_at(tc_state *st, int err, const char *attempt,
                        PyObject *addr);
void tcpy_log_current(tc_state *st, const char *context);
PyObject *tcpy_fetch_exception(void);             /* new ref or NULL */
void tcpy_restore_exception(PyObject *exc);       /* steals */
PyObject *tcpy_sockaddr_to_py(const struct sockaddr *sa, socklen_t len);

/* Type specs. */
extern PyType_Spec Reactor_spec;
extern PyType_Spec Transport_spec;
extern PyType_Spec Listener_spec;
extern PyType_Spec TimerHandle_spec;
extern PyType_Spec DatagramTransport_spec;
extern PyType_Spec CpuPool_spec;
extern PyType_Spec CpuTask_spec;
extern PyType_Spec Future_spec;
extern PyType_Spec FutureIter_spec;
extern PyType_Spec TLSContext_spec;
extern PyType_Spec FdWatcher_spec;
extern PyType_Spec ProcessTransport_spec;

/* Processes (process.c).  GIL: held. */
PyObject *reactor_spawn_process(ReactorObject *r, PyObject *args);
void process_dispatch(ReactorObject *r, pyevent_t *ev);
/* Transport.sendfile's completions (transport.c).  GIL: held. */
void sendfile_dispatch(ReactorObject *r, pyevent_t *ev);
void sendfile_discard(void *req);
#if PY_VERSION_HEX >= 0x030C0000
extern PyType_Spec InterpreterPool_spec;
#endif

/* TLS (tls.c).  GIL: held. */
tc_tls_ctx_t *tlscontext_native(tc_state *st, PyObject *obj,
                                const char *method, bool server_side);
PyObject *reactor_listen_tls(ReactorObject *r, PyObject *args,
                             PyObject *kwargs);
PyObject *reactor_connect_tls(ReactorObject *r, PyObject *args,
                              PyObject *kwargs);
/* tcpy_error_object() with the TLS failure's detail when s has one. */
PyObject *tls_error_object(tc_state *st, int err, tc_stream_t *s);
/* get_extra_info() for the TLS names: 1 with *out (new ref), 0 when name
 * is not one (or the transport is not TLS), -1 on error. */
int tls_extra_info(TransportObject *t, const char *name, PyObject **out);
int tls_module_add(PyObject *module);
/* Make a listener's connections TLS (transport.c). */
void listener_set_tls(PyObject *listener, PyObject *context,
                      uint64_t handshake_timeout_ms);

/* Futures (future.c).  GIL: held.  The setters return -1 only when a
 * callback raised KeyboardInterrupt or SystemExit. */
PyObject *future_new(tc_state *st, PyObject *reactor);
bool future_check(tc_state *st, PyObject *obj);
bool future_is_pending(PyObject *fut);
int future_set_result(PyObject *fut, PyObject *value);
int future_set_exception(PyObject *fut, PyObject *exc);
int future_cancel(PyObject *fut, PyObject *msg);
void future_set_task(PyObject *fut, PyObject *task, PyObject *cancel_hook);
/* The capsule C API (capi.c). */
PyObject *capi_capsule(void);
/* GIL: held, reactor thread.  The one route of native work to a Future:
 * work(arg) runs on pool, then on the reactor's thread to_python(arg,
 * status) builds the result, or returns NULL with an exception that fails
 * the Future (CancelledError cancels it); it is called exactly once.
 * *handle (may be NULL) receives the pool's handle for tc_pool_cancel()
 * and is set to NULL when that handle expires.  New ref, or NULL. */
PyObject *native_submit(PyObject *reactor, tc_pool_t *pool,
                        int (*work)(void *arg),
                        PyObject *(*to_python)(void *arg, int status),
                        void *arg, int priority, tc_work_t **handle);
void native_dispatch(ReactorObject *r, pyevent_t *ev);
void native_discard(void *task);
int native_traverse(void *task, visitproc visit, void *arg);
/* CpuTask helpers (cpu.c). */
bool cputask_check(PyObject *obj);
bool cputask_started(PyObject *task);
void cputask_cancel(PyObject *task);

#endif
