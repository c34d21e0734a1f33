/* Signal handlers that run on the loop thread, not in signal context.
 * One loop at a time may watch a given signal. */
#ifndef TWINCORE_SIGNAL_H
#define TWINCORE_SIGNAL_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*tc_signal_cb)(tc_signal_t *sig, int signum);

TC_EXTERN int tc_signal_new(tc_loop_t *loop, void *data, tc_signal_t **out);
/* Watch signum (SIGINT, SIGTERM, SIGCHLD, SIGHUP...).  Returns 0, -EINVAL
 * for a bad number or SIGKILL/SIGSTOP, or -EBUSY when another loop in this
 * process already watches it. */
TC_EXTERN int tc_signal_start(tc_signal_t *sig, tc_signal_cb cb, int signum);
TC_EXTERN int tc_signal_stop(tc_signal_t *sig);

#ifdef __cplusplus
}
#endif
#endif
