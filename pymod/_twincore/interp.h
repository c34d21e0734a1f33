/* InterpreterPool (interp.c): a subinterpreter per worker; 3.12+ only. */
#ifndef TWINCORE_PYMOD_INTERP_H
#define TWINCORE_PYMOD_INTERP_H

#include "module.h"

#if PY_VERSION_HEX >= 0x030C0000
extern PyType_Spec InterpreterPool_spec;
#endif

#endif
