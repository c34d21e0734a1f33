/* TLSContext and the TLS entry points of the Reactor (tls.c).  GIL:
 * held. */
#ifndef TWINCORE_PYMOD_TLS_H
#define TWINCORE_PYMOD_TLS_H

#include "transport.h"

extern PyType_Spec TLSContext_spec;

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

#endif
