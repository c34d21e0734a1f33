/* The framing split (framing.c): a protocol that gets one call per frame
 * (line, length prefix) instead of data_received.  GIL: held. */
#ifndef TWINCORE_PYMOD_FRAMING_H
#define TWINCORE_PYMOD_FRAMING_H

#include "transport.h"

PyObject *transport_set_framing(TransportObject *t, PyObject *args,
                                PyObject *kwargs);
/* Deliver the frames in t->inbuf (t->framing != NULL). */
void framing_deliver(TransportObject *t);
/* Transport.write_line(line): line and the framing's delimiter. */
PyObject *transport_write_line(TransportObject *t, PyObject *line);
void framing_free(TransportObject *t);
int framing_traverse(TransportObject *t, visitproc visit, void *arg);

#endif
