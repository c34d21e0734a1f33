/* Future (future.c): the one Future type every lane settles.  GIL: held.
 * The setters return -1 only when a callback raised KeyboardInterrupt or
 * SystemExit. */
#ifndef TWINCORE_PYMOD_FUTURE_H
#define TWINCORE_PYMOD_FUTURE_H

#include "module.h"

extern PyType_Spec Future_spec;
extern PyType_Spec FutureIter_spec;

PyObject *future_new(tc_state *st, PyObject *reactor);
bool future_check(tc_state *st, PyObject *obj);
bool future_is_pending(PyObject *fut);
int future_set_result(PyObject *fut, PyObject *value);
int future_set_exception(PyObject *fut, PyObject *exc);
int future_cancel(PyObject *fut, PyObject *msg);
void future_set_task(PyObject *fut, PyObject *task, PyObject *cancel_hook);
/* RuntimeError (-1) when called off the thread of the Future's reactor, as
 * the Python setters raise; what names the setter. */
int future_check_owner(PyObject *fut, const char *what);
/* The reactor, borrowed (NULL: none). */
PyObject *future_reactor(PyObject *fut);
void future_set_handled(PyObject *fut);
/* add_callbacks(callback, errback) without argument parsing; errback may
 * be NULL.  Runs the pair at once when the Future is done. */
int future_add_callbacks(PyObject *fut, PyObject *callback,
                         PyObject *errback);

#endif
