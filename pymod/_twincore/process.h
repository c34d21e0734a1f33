/* ProcessTransport (process.c): a child process and its pipes.  GIL:
 * held. */
#ifndef TWINCORE_PYMOD_PROCESS_H
#define TWINCORE_PYMOD_PROCESS_H

#include "reactor.h"

extern PyType_Spec ProcessTransport_spec;

PyObject *reactor_spawn_process(ReactorObject *r, PyObject *args);

#endif
