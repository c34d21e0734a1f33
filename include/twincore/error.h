/* Error codes.  Every fallible function returns 0 or a negative code: a
 * negated errno (-EINVAL, -ECONNRESET), or a TC_E* constant below -3000 for
 * conditions errno cannot name. */
#ifndef TWINCORE_ERROR_H
#define TWINCORE_ERROR_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TC_EOF (-3001)          /* the peer closed its write side */
#define TC_ENONAME (-3002)      /* host name not known */
#define TC_EAGAIN_NAME (-3003)  /* temporary name-resolution failure */
#define TC_ENAMEFAIL (-3004)    /* name resolution failed otherwise */
#define TC_ETLS (-3100)         /* TLS protocol error */
#define TC_ETLS_CERT (-3101)    /* peer certificate rejected */
#define TC_ETLS_HOSTNAME (-3102) /* certificate does not match the host */
#define TC_ETLS_EXPIRED (-3103) /* certificate expired or not yet valid */
#define TC_ETLS_UNKNOWN_CA (-3104) /* certificate chain not trusted */
#define TC_ETLS_VERSION (-3105) /* no protocol version in common */
#define TC_ETLS_NO_CLOSE_NOTIFY (-3106) /* peer vanished without close_notify */

/* A message for any code this library returns; never NULL. */
TC_EXTERN const char *tc_strerror(int err);
/* The symbolic name ("ECONNRESET", "TC_EOF"); "UNKNOWN" when not known. */
TC_EXTERN const char *tc_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif
