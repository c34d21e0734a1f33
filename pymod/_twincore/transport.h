/* Transport and Listener (transport.c): TCP and Unix connections, their
 * listeners, and Transport.sendfile. */
#ifndef TWINCORE_PYMOD_TRANSPORT_H
#define TWINCORE_PYMOD_TRANSPORT_H

#include "reactor.h"

typedef struct framing framing_t;    /* framing.h */

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

extern PyType_Spec Transport_spec;
extern PyType_Spec Listener_spec;

PyObject *transport_new(ReactorObject *r, tc_stream_t *s, bool is_unix);
/* GIL: none.  Hand t's output buffer to its stream (reactor_flush). */
void transport_flush(TransportObject *t);
/* GIL: held.  The reactor was closed (reactor.c, after its loop is gone):
 * connection_lost, once, to a protocol that has not heard it yet. */
void transport_reactor_closed(PyObject *t);
extern const tc_stream_callbacks_t transport_callbacks;
/* GIL: none.  A client's connect, or a TLS handshake, finished. */
void transport_on_connect(tc_stream_t *s, int status);
/* GIL: held.  A protocol method raised the current exception: log it and
 * abort the connection (connection_lost gets the exception). */
void transport_protocol_failed(TransportObject *t, const char *context);
/* GIL: held.  Have the bytes in t's input buffer delivered (PYEV_DATA). */
void transport_queue_data(TransportObject *t);
/* GIL: held.  write() of a then b: 0, or -1 with an exception (a dropped
 * write of a lost connection is 0, as for write()). */
int transport_write_two(TransportObject *t, const char *a, size_t alen,
                        const char *b, size_t blen);

/* GIL: none.  The server's connection callback. */
void listener_on_connection(tc_server_t *server, tc_stream_t *conn,
                            int status);
PyObject *listener_new(ReactorObject *r, tc_server_t *server,
                       PyObject *factory, bool is_unix);
/* Make a listener's connections TLS. */
void listener_set_tls(PyObject *listener, PyObject *context,
                      uint64_t handshake_timeout_ms);

#endif
