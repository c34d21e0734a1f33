/* libFuzzer target: the address parsers and formatters (src/net.c) that
 * see text from configuration and addresses from peers.
 *
 * The input's first bytes pick a port and an output size; the rest is a
 * host string for tc_sockaddr_from_numeric(), and, read as a raw address
 * of a given length, what recvfrom/accept could hand tc_sockaddr_format().
 * Checked: no out-of-bounds access or UB (ASan/UBSan), results are 0 or a
 * documented code, a parsed address formats and parses back to the same
 * address, formatted text always fits and ends in NUL. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "fuzz.h"
#include "twincore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
format_raw(const uint8_t *raw, size_t n, size_t out_size)
{
    struct sockaddr_storage ss;
    char out[256];
    memset(&ss, 0, sizeof(ss));
    if (n > sizeof(ss)) {
        n = sizeof(ss);
    }
    memcpy(&ss, raw, n);
    if (out_size > sizeof(out)) {
        out_size = sizeof(out);
    }
    memset(out, 'x', sizeof(out));
    int rc = tc_sockaddr_format((struct sockaddr *)&ss, (socklen_t)n, out,
                                out_size);
    CHECK(rc == 0 || rc == -ENOSPC || rc == -EAFNOSUPPORT ||
          (rc == -EINVAL && out_size == 0));
    if (rc == 0) {
        CHECK(memchr(out, '\0', out_size) != NULL);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in_t in = {data, size};
    int port = (int)fz_u16(&in) - (fz_u8(&in) & 1 ? 70000 : 0);
    size_t out_size = fz_u8(&in);

    /* The rest as text. */
    char host[512];
    size_t n = in.n < sizeof(host) - 1 ? in.n : sizeof(host) - 1;
    memcpy(host, in.p, n);
    host[n] = '\0';

    struct sockaddr_storage ss;
    socklen_t len = 0;
    int rc = tc_sockaddr_from_numeric(host, port, &ss, &len);
    CHECK(rc == 0 || rc == -EINVAL);
    if (port < 0 || port > 65535) {
        CHECK(rc == -EINVAL);
    }
    if (rc == 0) {
        CHECK(len == sizeof(struct sockaddr_in) ||
              len == sizeof(struct sockaddr_in6));
        char text[128];
        CHECK(tc_sockaddr_format((struct sockaddr *)&ss, len, text,
                                 sizeof(text)) == 0);
        /* "a.b.c.d:port" or "[v6]:port" parses back to the same. */
        char *colon = strrchr(text, ':');
        CHECK(colon != NULL);
        *colon = '\0';
        struct sockaddr_storage back;
        socklen_t blen;
        CHECK(tc_sockaddr_from_numeric(text, port, &back, &blen) == 0);
        CHECK(blen == len && memcmp(&back, &ss, len) == 0);
    }

    /* The same bytes as a raw address, of every family and length. */
    format_raw(in.p, in.n, out_size);
    if (in.n >= 2) {
        /* ...and with the family forced, so each formatter sees it. */
        static const sa_family_t fams[3] = {AF_INET, AF_INET6, AF_UNIX};
        uint8_t raw[sizeof(struct sockaddr_storage)];
        size_t rn = in.n < sizeof(raw) ? in.n : sizeof(raw);
        memcpy(raw, in.p, rn);
        sa_family_t fam = fams[raw[0] % 3];
        memcpy(raw, &fam, sizeof(fam));
        format_raw(raw, rn, out_size);
    }
    return 0;
}
