/* Names and messages for every code the library returns.  glibc's
 * strerrordesc_np() is used for errno values because, unlike strerror(),
 * it is thread-safe and never builds a string. */
#include <string.h>

#include "internal.h"

static const struct {
    int code;
    const char *name;
    const char *message;
} own_codes[] = {
    {TC_EOF, "TC_EOF", "end of stream"},
    {TC_ENONAME, "TC_ENONAME", "host name not known"},
    {TC_EAGAIN_NAME, "TC_EAGAIN_NAME",
     "temporary failure in name resolution"},
    {TC_ENAMEFAIL, "TC_ENAMEFAIL", "name resolution failed"},
    {TC_ETLS, "TC_ETLS", "TLS protocol error"},
    {TC_ETLS_CERT, "TC_ETLS_CERT", "TLS peer certificate rejected"},
    {TC_ETLS_HOSTNAME, "TC_ETLS_HOSTNAME",
     "TLS certificate does not match the host name"},
    {TC_ETLS_EXPIRED, "TC_ETLS_EXPIRED",
     "TLS certificate expired or not yet valid"},
    {TC_ETLS_UNKNOWN_CA, "TC_ETLS_UNKNOWN_CA",
     "TLS certificate signed by an unknown authority"},
    {TC_ETLS_VERSION, "TC_ETLS_VERSION",
     "no TLS protocol version in common with the peer"},
    {TC_ETLS_NO_CLOSE_NOTIFY, "TC_ETLS_NO_CLOSE_NOTIFY",
     "TLS peer closed the connection without close_notify"},
};

const char *
tc_strerror(int err)
{
    if (err == 0) {
        return "success";
    }
    for (size_t i = 0; i < sizeof(own_codes) / sizeof(own_codes[0]); i++) {
        if (own_codes[i].code == err) {
            return own_codes[i].message;
        }
    }
    if (err < 0 && err > -4096) {
        const char *desc = strerrordesc_np(-err);
        if (desc != NULL) {
            return desc;
        }
    }
    return "unknown error";
}

const char *
tc_err_name(int err)
{
    if (err == 0) {
        return "OK";
    }
    for (size_t i = 0; i < sizeof(own_codes) / sizeof(own_codes[0]); i++) {
        if (own_codes[i].code == err) {
            return own_codes[i].name;
        }
    }
    if (err < 0 && err > -4096) {
        const char *name = strerrorname_np(-err);
        if (name != NULL) {
            return name;
        }
    }
    return "UNKNOWN";
}
