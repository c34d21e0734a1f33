/* CpuPool and CpuTask (cpu.c): Python callables on the native pool. */
#ifndef TWINCORE_PYMOD_CPU_H
#define TWINCORE_PYMOD_CPU_H

#include "reactor.h"

extern PyType_Spec CpuPool_spec;
extern PyType_Spec CpuTask_spec;

/* Visit, or discard (GIL: held), the finished tasks on their way back to
 * r's loop (r->transit). */
int cpu_transit_traverse(ReactorObject *r, visitproc visit, void *arg);
void cpu_transit_discard(ReactorObject *r);
tc_pool_t *cpupool_native(PyObject *pool);
/* GIL: held.  A pool's tc_pool_stats() as CpuPool.stats()'s dict (every
 * lane's stats() has this shape), or NULL with an exception set. */
PyObject *pool_stats_dict(tc_pool_t *pool);
/* CpuTask helpers.  GIL: held. */
bool cputask_check(PyObject *obj);
bool cputask_started(PyObject *task);
void cputask_cancel(PyObject *task);

#endif
