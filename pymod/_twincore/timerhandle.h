/* TimerHandle (timerhandle.c): what call_later() returns. */
#ifndef TWINCORE_PYMOD_TIMERHANDLE_H
#define TWINCORE_PYMOD_TIMERHANDLE_H

#include "reactor.h"

extern PyType_Spec TimerHandle_spec;

/* GIL: held. */
PyObject *timerhandle_new(ReactorObject *r, double delay, PyObject *fn,
                          PyObject *args);

#endif
