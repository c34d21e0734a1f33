/* Shared definitions of the public API: export macro, opaque types, and the
 * handle operations every handle type supports (close, data, walk). */
#ifndef TWINCORE_COMMON_H
#define TWINCORE_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#if defined(TC_BUILDING_LIBRARY) && defined(__GNUC__)
#define TC_EXTERN __attribute__((visibility("default")))
#else
#define TC_EXTERN
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tc_loop_s tc_loop_t;
typedef struct tc_handle_s tc_handle_t;
typedef struct tc_timer_s tc_timer_t;
typedef struct tc_signal_s tc_signal_t;
typedef struct tc_async_s tc_async_t;
typedef struct tc_stream_s tc_stream_t;
typedef struct tc_server_s tc_server_t;
typedef struct tc_udp_s tc_udp_t;
typedef struct tc_poll_s tc_poll_t;
typedef struct tc_process_s tc_process_t;

typedef enum tc_handle_type {
    TC_HANDLE_TIMER = 1,
    TC_HANDLE_SIGNAL,
    TC_HANDLE_ASYNC,
    TC_HANDLE_STREAM,
    TC_HANDLE_SERVER,
    TC_HANDLE_UDP,
    TC_HANDLE_POLL,
    TC_HANDLE_PROCESS,
} tc_handle_type_t;

/* Called once, on a loop iteration after tc_close(); twincore frees the
 * handle as soon as it returns.  Release what hangs on tc_handle_data(h). */
typedef void (*tc_close_cb)(tc_handle_t *handle);

/* Close any handle: stops it, completes pending work with -ECANCELED, and
 * calls cb (may be NULL) on a later iteration.  Returns 0, -EINVAL for NULL,
 * or -EALREADY when the handle is already closing.  Thread: loop. */
TC_EXTERN int tc_close(tc_handle_t *handle, tc_close_cb cb);

TC_EXTERN void *tc_handle_data(const tc_handle_t *handle);
TC_EXTERN void tc_handle_set_data(tc_handle_t *handle, void *data);
TC_EXTERN tc_loop_t *tc_handle_loop(const tc_handle_t *handle);
TC_EXTERN tc_handle_type_t tc_handle_type(const tc_handle_t *handle);
/* True while the handle is started (a timer armed, a stream reading or
 * writing, a server accepting). */
TC_EXTERN bool tc_handle_is_active(const tc_handle_t *handle);
TC_EXTERN bool tc_handle_is_closing(const tc_handle_t *handle);
TC_EXTERN const char *tc_handle_type_name(tc_handle_type_t type);

/* Type-checked converters to the base handle (no casts in user code). */
TC_EXTERN tc_handle_t *tc_timer_handle(tc_timer_t *timer);
TC_EXTERN tc_handle_t *tc_signal_handle(tc_signal_t *sig);
TC_EXTERN tc_handle_t *tc_async_handle(tc_async_t *async);
TC_EXTERN tc_handle_t *tc_stream_handle(tc_stream_t *stream);
TC_EXTERN tc_handle_t *tc_server_handle(tc_server_t *server);
TC_EXTERN tc_handle_t *tc_udp_handle(tc_udp_t *udp);
TC_EXTERN tc_handle_t *tc_poll_handle(tc_poll_t *poll);

#ifdef __cplusplus
}
#endif
#endif
