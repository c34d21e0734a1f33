/* A wakeup: any thread calls tc_async_send(); the loop thread runs the
 * callback once for any number of sends since the last run. */
#ifndef TWINCORE_ASYNC_H
#define TWINCORE_ASYNC_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*tc_async_cb)(tc_async_t *async);

/* An active async keeps tc_loop_run(TC_RUN_DEFAULT) running. */
TC_EXTERN int tc_async_new(tc_loop_t *loop, tc_async_cb cb, void *data,
                           tc_async_t **out);
/* Thread: any.  Safe until tc_close() is called on the handle. */
TC_EXTERN int tc_async_send(tc_async_t *async);

#ifdef __cplusplus
}
#endif
#endif
