/* _TaskStep (taskstep.c): one step of twincore's Task driver in C. */
#ifndef TWINCORE_PYMOD_TASKSTEP_H
#define TWINCORE_PYMOD_TASKSTEP_H

#include "module.h"

/* Builds _TaskStep and adds it to the module with the names its hot path
 * uses.  Returns 0, or -1 with an exception set.  GIL: held. */
int taskstep_module_add(PyObject *module);

#endif
