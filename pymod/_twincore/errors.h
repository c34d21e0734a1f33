/* Errors (errors.c): tc codes to Python exceptions, logging of what
 * callbacks raise, socket addresses to Python.  GIL: held. */
#ifndef TWINCORE_PYMOD_ERRORS_H
#define TWINCORE_PYMOD_ERRORS_H

#include <sys/socket.h>

#include "module.h"

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
/* Raises what an awaitable's throw(type[, value[, traceback]]) passes in
 * (args: that tuple); returns NULL. */
PyObject *tcpy_raise_thrown(PyObject *args);
PyObject *tcpy_sockaddr_to_py(const struct sockaddr *sa, socklen_t len);

#endif
