/* DatagramTransport (udp.c): a UDP socket for a DatagramProtocol. */
#ifndef TWINCORE_PYMOD_UDP_H
#define TWINCORE_PYMOD_UDP_H

#include "reactor.h"

extern PyType_Spec DatagramTransport_spec;

/* GIL: held. */
PyObject *datagram_new(ReactorObject *r, tc_udp_t *udp, PyObject *protocol);
/* GIL: held.  The reactor was closed: connection_lost, once. */
void datagram_reactor_closed(PyObject *d);
/* GIL: none.  The socket's receive callback. */
void udp_on_recv(tc_udp_t *udp, const char *buf, size_t len,
                 const struct sockaddr *from, socklen_t fromlen, int status);

#endif
