/* _StreamReaderBase and _ReadLine (streamreader.c): the C half of
 * twincore.StreamReader.  GIL: held. */
#ifndef TWINCORE_PYMOD_STREAMREADER_H
#define TWINCORE_PYMOD_STREAMREADER_H

#include "module.h"

extern PyType_Spec StreamReader_spec;
extern PyType_Spec ReadLine_spec;
/* Adds _ready, the awaitable StreamWriter.drain() returns when it need
 * not wait. */
int streams_module_add(PyObject *module);

#endif
