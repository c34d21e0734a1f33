/* Descriptor watchers (fdwatch.c): Reactor.add_reader/add_writer and
 * their removal.  GIL: held. */
#ifndef TWINCORE_PYMOD_FDWATCH_H
#define TWINCORE_PYMOD_FDWATCH_H

#include "reactor.h"

extern PyType_Spec FdWatcher_spec;

PyObject *reactor_add_reader(ReactorObject *r, PyObject *const *args,
                             Py_ssize_t nargs);
PyObject *reactor_add_writer(ReactorObject *r, PyObject *const *args,
                             Py_ssize_t nargs);
PyObject *reactor_remove_reader(ReactorObject *r, PyObject *arg);
PyObject *reactor_remove_writer(ReactorObject *r, PyObject *arg);
/* asyncio's rule for a descriptor argument: an int, or an object whose
 * fileno() returns one; what names the method in errors.  Returns 0 or -1
 * with an exception. */
int tcpy_fileno(PyObject *obj, const char *what, int *out);

#endif
