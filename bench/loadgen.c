/* bench/loadgen.c: an epoll load generator for echo servers.
 *
 * Opens N connections, keeps `depth` messages of `size` bytes in flight on
 * each, and checks every echoed byte. Message k of connection c starts with
 * k and c and continues with a slice of a random buffer whose offset depends
 * on k, so a lost, duplicated, corrupted or reordered message fails the
 * check. After a warmup it counts completed round trips for a fixed duration
 * and prints one JSON line. A message's latency runs from the moment it is
 * queued for sending to the arrival of its last echoed byte.
 *
 * With --sample-pid, the utime+stime of that process (from /proc/PID/stat)
 * is read at the two edges of the measured window, so the runner gets the
 * server's CPU time over exactly that window; the generator's own CPU time
 * over the window comes from getrusage(), and the whole machine's busy time
 * from /proc/stat, so other load on the machine can be detected.
 *
 * With --tls, each connection does a blocking TLS handshake, then runs
 * non-blocking like the plain mode.  With --lines, every message is a text
 * line: the header in hex, printable pattern bytes, and a final '\n', so a
 * line echo server (one line in, the same line out) can be measured with
 * the same checks.  Every loop is bounded in time.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define HEADER_LEN 12           /* 8 bytes of sequence, 4 of connection id */
#define PATTERN_SPAN 4093       /* prime: offsets of the random slice */
#define RX_BUF_LEN (256 * 1024)
#define MAX_EVENTS 256
#define CONNECT_TIMEOUT_MS 5000
#define STALL_NS 1000000000u    /* an echo missing this long is an error */

/* A log-linear histogram of nanoseconds: 64 sub-buckets per power of two,
 * so a reported percentile is within 1.6% of the true value. */
#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_LEN ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

typedef struct options {
    const char *host;
    const char *port;
    const char *ca_file;
    long connections;
    long size;
    long depth;
    double duration_s;
    double warmup_s;
    long sample_pid;
    bool tls;
    bool insecure;
    bool lines;                 /* messages are '\n'-terminated text lines */
} options_t;

typedef struct conn {
    int fd;
    SSL *ssl;
    uint32_t id;
    uint64_t tx_seq;            /* next message to queue */
    uint64_t rx_seq;            /* next message expected back */
    size_t rx_off;              /* bytes of message rx_seq already checked */
    unsigned char *expect;      /* the bytes of message rx_seq */
    unsigned char *out;         /* queued bytes, [out_off, out_len) unsent */
    size_t out_off;
    size_t out_len;
    uint64_t *queued_ns;        /* ring of depth queue times, by seq */
    bool want_out;              /* EPOLLOUT is registered */
    bool dead;
} conn_t;

typedef struct bench {
    options_t opt;
    int epfd;
    SSL_CTX *ssl_ctx;
    conn_t *conns;
    long connected;
    long alive;
    unsigned char *pattern;     /* size + PATTERN_SPAN random bytes */
    unsigned char *rx_buf;
    bool measuring;
    uint64_t msgs;              /* round trips completed in the window */
    uint64_t errors;
    uint64_t hist[HIST_LEN];
} bench_t;

static void
usage(FILE *out)
{
    fprintf(out,
        "usage: loadgen [options]\n"
        "  -H, --host HOST        server address (127.0.0.1)\n"
        "  -P, --port PORT        server port (required)\n"
        "  -c, --connections N    connections (64)\n"
        "  -s, --size BYTES       message size (64)\n"
        "  -p, --pipeline N       messages in flight per connection (1)\n"
        "  -d, --duration SEC     measured window (5)\n"
        "  -w, --warmup SEC       warmup before the window (1)\n"
        "      --sample-pid PID   report that process's CPU time in the "
        "window\n"
        "      --tls              speak TLS (OpenSSL)\n"
        "  -k, --insecure         with --tls: do not verify the server\n"
        "      --lines            each message is a text line ending in "
        "'\\n'\n"
        "      --ca FILE          with --tls: trust this CA file\n"
        "Prints one JSON line; exits 1 on a usage or setup error.\n");
}

static inline uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double
cpu_self_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* utime+stime of a process in seconds, or -1 if it cannot be read. The
 * command name (field 2) may hold spaces and parentheses, so parsing starts
 * after the last ')'. */
static double
cpu_of_pid_s(long pid)
{
    char path[64];
    char buf[1024];
    unsigned long long utime;
    unsigned long long stime;
    FILE *f;
    size_t n;
    char *p;

    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (p == NULL) {
        return -1;
    }
    /* Fields 3..13 (state to cmajflt) precede utime and stime. */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &utime, &stime) != 2) {
        return -1;
    }
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU time every process on the machine spent busy (user, nice, system,
 * irq, softirq), in seconds, from the first line of /proc/stat; -1 if it
 * cannot be read. Less the server's and our own, it shows whether anything
 * else ran during the window. */
static double
cpu_of_machine_s(void)
{
    unsigned long long user;
    unsigned long long nice;
    unsigned long long system;
    unsigned long long idle;
    unsigned long long iowait;
    unsigned long long irq;
    unsigned long long softirq;
    FILE *f = fopen("/proc/stat", "r");
    int n;

    if (f == NULL) {
        return -1;
    }
    n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &user, &nice,
               &system, &idle, &iowait, &irq, &softirq);
    fclose(f);
    if (n != 7) {
        return -1;
    }
    return (double)(user + nice + system + irq + softirq) /
           (double)sysconf(_SC_CLK_TCK);
}

static inline unsigned
hist_index(uint64_t v)
{
    unsigned e;

    if (v < HIST_SUB) {
        return (unsigned)v;
    }
    e = 63u - (unsigned)__builtin_clzll(v);
    return (e - HIST_SUB_BITS + 1) * HIST_SUB +
           (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The middle of bucket i, in nanoseconds. */
static double
hist_value(unsigned i)
{
    unsigned e;
    double low;
    double width;

    if (i < HIST_SUB) {
        return i;
    }
    e = i / HIST_SUB + HIST_SUB_BITS - 1;
    width = ldexp(1.0, (int)(e - HIST_SUB_BITS));
    low = (double)(HIST_SUB + i % HIST_SUB) * width;
    return low + width / 2;
}

static double
hist_percentile_us(const uint64_t *hist, uint64_t total, double q)
{
    uint64_t rank;
    uint64_t seen = 0;

    if (total == 0) {
        return 0;
    }
    rank = (uint64_t)ceil(q * (double)total);
    if (rank == 0) {
        rank = 1;
    }
    for (unsigned i = 0; i < HIST_LEN; i++) {
        seen += hist[i];
        if (seen >= rank) {
            return hist_value(i) / 1000.0;
        }
    }
    return hist_value(HIST_LEN - 1) / 1000.0;
}

/* value as 2 * width lowercase hex digits, most significant first (what
 * "%016llx"/"%08x" print; snprintf per message was 4% of our CPU). */
static void
put_hex(unsigned char *dst, uint64_t value, int width)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 2 * width - 1; i >= 0; i--) {
        dst[i] = (unsigned char)digits[value & 0xf];
        value >>= 4;
    }
}

/* Writes message seq of connection id: the header, then a slice of the
 * pattern that starts at an offset depending on seq. */
static void
fill_message(const bench_t *b, unsigned char *dst, uint32_t id, uint64_t seq)
{
    size_t size = (size_t)b->opt.size;
    size_t off = (size_t)((seq * 7919u) % PATTERN_SPAN);
    unsigned char header[HEADER_LEN * 2 + 1];
    size_t hlen = HEADER_LEN;

    if (b->opt.lines) {
        /* Text: the header in hex (no '\n' in it), the line's end last. */
        put_hex(header, seq, 8);
        put_hex(header + 16, id, 4);
        hlen = HEADER_LEN * 2;
        size--;
        dst[size] = '\n';
    } else {
        memcpy(header, &seq, 8);
        memcpy(header + 8, &id, 4);
    }
    memcpy(dst, header, size < hlen ? size : hlen);
    if (size > hlen) {
        memcpy(dst + hlen, b->pattern + off, size - hlen);
    }
}

static void
conn_fail(bench_t *b, conn_t *c, const char *why)
{
    if (c->dead) {
        return;
    }
    if (b->errors < 5) {
        fprintf(stderr, "loadgen: connection %u: %s\n", c->id, why);
    }
    b->errors++;
    c->dead = true;
    b->alive--;
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, c->fd, NULL);
}

static void
set_want_out(bench_t *b, conn_t *c, bool want)
{
    struct epoll_event ev;

    if (c->want_out == want) {
        return;
    }
    c->want_out = want;
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0);
    ev.data.ptr = c;
    epoll_ctl(b->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Queues messages until depth are in flight. Unsent bytes never exceed the
 * bytes in flight, so compacting makes room for a new message. */
static void
top_up(bench_t *b, conn_t *c)
{
    size_t size = (size_t)b->opt.size;
    size_t cap = size * (size_t)b->opt.depth;
    uint64_t now = 0;

    while (c->tx_seq - c->rx_seq < (uint64_t)b->opt.depth) {
        if (c->out_off == c->out_len) {
            c->out_off = 0;
            c->out_len = 0;
        } else if (c->out_len + size > cap) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        fill_message(b, c->out + c->out_len, c->id, c->tx_seq);
        c->out_len += size;
        if (now == 0) {
            now = now_ns();
        }
        c->queued_ns[c->tx_seq % (uint64_t)b->opt.depth] = now;
        c->tx_seq++;
    }
}

static void
flush_out(bench_t *b, conn_t *c)
{
    while (c->out_off < c->out_len) {
        size_t len = c->out_len - c->out_off;
        ssize_t n;

        if (c->ssl != NULL) {
            int r = SSL_write(c->ssl, c->out + c->out_off, (int)len);

            if (r <= 0) {
                int err = SSL_get_error(c->ssl, r);

                if (err == SSL_ERROR_WANT_WRITE) {
                    set_want_out(b, c, true);
                } else if (err != SSL_ERROR_WANT_READ) {
                    conn_fail(b, c, "TLS write failed");
                }
                /* WANT_READ: retried after the next read; EPOLLIN is on. */
                return;
            }
            n = r;
        } else {
            n = send(c->fd, c->out + c->out_off, len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    set_want_out(b, c, true);
                } else {
                    conn_fail(b, c, strerror(errno));
                }
                return;
            }
        }
        c->out_off += (size_t)n;
    }
    set_want_out(b, c, false);
}

/* Checks received bytes against the expected stream and completes
 * messages. Returns false when the connection failed. */
static bool
consume(bench_t *b, conn_t *c, const unsigned char *p, size_t len,
        uint64_t now)
{
    size_t size = (size_t)b->opt.size;

    while (len > 0) {
        size_t n = size - c->rx_off;

        if (c->rx_seq >= c->tx_seq) {
            conn_fail(b, c, "received bytes that were never sent");
            return false;
        }
        if (n > len) {
            n = len;
        }
        if (memcmp(c->expect + c->rx_off, p, n) != 0) {
            conn_fail(b, c, "echoed bytes differ from those sent");
            return false;
        }
        c->rx_off += n;
        p += n;
        len -= n;
        if (c->rx_off == size) {
            if (b->measuring) {
                uint64_t q = c->queued_ns[c->rx_seq % (uint64_t)b->opt.depth];

                b->hist[hist_index(now - q)]++;
                b->msgs++;
            }
            c->rx_seq++;
            c->rx_off = 0;
            fill_message(b, c->expect, c->id, c->rx_seq);
        }
    }
    return true;
}

static void
on_readable(bench_t *b, conn_t *c)
{
    if (c->ssl != NULL) {
        /* OpenSSL may hold decrypted records epoll cannot see: read until
         * it asks for more from the socket. */
        for (;;) {
            int r = SSL_read(c->ssl, b->rx_buf, RX_BUF_LEN);

            if (r <= 0) {
                int err = SSL_get_error(c->ssl, r);

                if (err == SSL_ERROR_WANT_READ ||
                    err == SSL_ERROR_WANT_WRITE) {
                    break;
                }
                conn_fail(b, c, err == SSL_ERROR_ZERO_RETURN
                                    ? "server closed the TLS session"
                                    : "TLS read failed");
                return;
            }
            if (!consume(b, c, b->rx_buf, (size_t)r, now_ns())) {
                return;
            }
        }
    } else {
        ssize_t n = recv(c->fd, b->rx_buf, RX_BUF_LEN, 0);

        if (n == 0) {
            conn_fail(b, c, "server closed the connection");
            return;
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                conn_fail(b, c, strerror(errno));
            }
            return;
        }
        if (!consume(b, c, b->rx_buf, (size_t)n, now_ns())) {
            return;
        }
    }
    top_up(b, c);
    flush_out(b, c);
}

static int
connect_with_timeout(const struct addrinfo *ai)
{
    struct pollfd pfd;
    int fd;
    int one = 1;
    int err = 0;
    socklen_t errlen = sizeof(err);

    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0) {
        return -errno;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 &&
        errno != EINPROGRESS) {
        err = errno;
        goto fail;
    }
    pfd.fd = fd;
    pfd.events = POLLOUT;
    if (poll(&pfd, 1, CONNECT_TIMEOUT_MS) != 1) {
        err = ETIMEDOUT;
        goto fail;
    }
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen);
    if (err != 0) {
        goto fail;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;

fail:
    close(fd);
    return -err;
}

/* A blocking handshake bounded by socket timeouts, then back to
 * non-blocking. */
static int
tls_handshake(bench_t *b, conn_t *c)
{
    struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_MS / 1000};
    struct timeval zero = {0};
    int flags = fcntl(c->fd, F_GETFL);

    c->ssl = SSL_new(b->ssl_ctx);
    if (c->ssl == NULL) {
        return -1;
    }
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, b->opt.host);
    if (!b->opt.insecure) {
        SSL_set1_host(c->ssl, b->opt.host);
    }
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                         SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    fcntl(c->fd, F_SETFL, flags & ~O_NONBLOCK);
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (SSL_connect(c->ssl) != 1) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof(zero));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof(zero));
    fcntl(c->fd, F_SETFL, flags | O_NONBLOCK);
    return 0;
}

static int
setup_tls(bench_t *b)
{
    b->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (b->ssl_ctx == NULL) {
        return -1;
    }
    SSL_CTX_set_min_proto_version(b->ssl_ctx, TLS1_2_VERSION);
    if (b->opt.insecure) {
        SSL_CTX_set_verify(b->ssl_ctx, SSL_VERIFY_NONE, NULL);
        return 0;
    }
    SSL_CTX_set_verify(b->ssl_ctx, SSL_VERIFY_PEER, NULL);
    if (b->opt.ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(b->ssl_ctx, b->opt.ca_file,
                                          NULL) != 1) {
            ERR_print_errors_fp(stderr);
            return -1;
        }
    } else {
        SSL_CTX_set_default_verify_paths(b->ssl_ctx);
    }
    return 0;
}

static int
open_connections(bench_t *b)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai;
    size_t size = (size_t)b->opt.size;
    int rc;

    rc = getaddrinfo(b->opt.host, b->opt.port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "loadgen: %s: %s\n", b->opt.host, gai_strerror(rc));
        return -1;
    }
    for (long i = 0; i < b->opt.connections; i++) {
        conn_t *c = &b->conns[i];
        struct epoll_event ev;

        c->id = (uint32_t)i;
        c->fd = connect_with_timeout(ai);
        if (c->fd < 0) {
            fprintf(stderr, "loadgen: connect %s:%s: %s\n", b->opt.host,
                    b->opt.port, strerror(-c->fd));
            break;
        }
        if (b->opt.tls && tls_handshake(b, c) < 0) {
            fprintf(stderr, "loadgen: TLS handshake failed\n");
            close(c->fd);
            c->fd = -1;
            break;
        }
        c->expect = malloc(size);
        c->out = malloc(size * (size_t)b->opt.depth);
        c->queued_ns = calloc((size_t)b->opt.depth, sizeof(uint64_t));
        if (c->expect == NULL || c->out == NULL || c->queued_ns == NULL) {
            fprintf(stderr, "loadgen: out of memory\n");
            break;
        }
        fill_message(b, c->expect, c->id, 0);
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        epoll_ctl(b->epfd, EPOLL_CTL_ADD, c->fd, &ev);
        b->connected++;
    }
    freeaddrinfo(ai);
    b->alive = b->connected;
    return b->connected == b->opt.connections ? 0 : -1;
}

/* Prints the JSON line. Rates are 0 when nothing was measured; a CPU time
 * that could not be read is -1. Returns the exit status: 0, or 2 when
 * anything failed. */
static int
report(const bench_t *b, uint64_t measured_ns, double client_cpu,
       double server_cpu, double busy_cpu)
{
    double secs = (double)measured_ns / 1e9;
    double per_s = measured_ns > 0 ? (double)b->msgs / secs : 0;

    printf("{\"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, "
           "\"errors\": %llu, \"connections\": %ld, "
           "\"size\": %ld, \"pipeline\": %ld, \"tls\": %s, "
           "\"msgs\": %llu, \"duration_s\": %.4f, "
           "\"client_cpu_s\": %.4f, \"server_cpu_s\": %.4f, "
           "\"busy_cpu_s\": %.4f}\n",
           per_s, per_s * (double)b->opt.size / 1e6,
           hist_percentile_us(b->hist, b->msgs, 0.50),
           hist_percentile_us(b->hist, b->msgs, 0.99),
           hist_percentile_us(b->hist, b->msgs, 0.999),
           (unsigned long long)b->errors, b->connected, b->opt.size,
           b->opt.depth, b->opt.tls ? "true" : "false",
           (unsigned long long)b->msgs, secs, client_cpu, server_cpu,
           busy_cpu);
    fflush(stdout);
    return b->errors == 0 && b->msgs > 0 ? 0 : 2;
}

static bool
parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *s == '\0' || *end != '\0' || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

static bool
parse_seconds(const char *s, double min, double *out)
{
    char *end;
    double v = strtod(s, &end);

    if (*s == '\0' || *end != '\0' || !(v >= min) || v > 86400) {
        return false;
    }
    *out = v;
    return true;
}

static int
parse_options(int argc, char **argv, options_t *o)
{
    enum { OPT_TLS = 256, OPT_CA, OPT_SAMPLE_PID, OPT_LINES };
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'P'},
        {"connections", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},
        {"pipeline", required_argument, NULL, 'p'},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"insecure", no_argument, NULL, 'k'},
        {"tls", no_argument, NULL, OPT_TLS},
        {"ca", required_argument, NULL, OPT_CA},
        {"sample-pid", required_argument, NULL, OPT_SAMPLE_PID},
        {"lines", no_argument, NULL, OPT_LINES},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    bool ok = true;

    *o = (options_t){.host = "127.0.0.1", .connections = 64, .size = 64,
                     .depth = 1, .duration_s = 5, .warmup_s = 1};
    while ((ch = getopt_long(argc, argv, "H:P:c:s:p:d:w:kh", longopts,
                             NULL)) != -1) {
        switch (ch) {
        case 'H':
            o->host = optarg;
            break;
        case 'P':
            o->port = optarg;
            break;
        case 'c':
            ok = ok && parse_long(optarg, 1, 100000, &o->connections);
            break;
        case 's':
            ok = ok && parse_long(optarg, 1, 16 << 20, &o->size);
            break;
        case 'p':
            ok = ok && parse_long(optarg, 1, 4096, &o->depth);
            break;
        case 'd':
            ok = ok && parse_seconds(optarg, 0.01, &o->duration_s);
            break;
        case 'w':
            ok = ok && parse_seconds(optarg, 0, &o->warmup_s);
            break;
        case 'k':
            o->insecure = true;
            break;
        case OPT_TLS:
            o->tls = true;
            break;
        case OPT_CA:
            o->ca_file = optarg;
            break;
        case OPT_LINES:
            o->lines = true;
            break;
        case OPT_SAMPLE_PID:
            ok = ok && parse_long(optarg, 1, 1L << 30, &o->sample_pid);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            ok = false;
        }
    }
    if (o->lines && o->size < 2) {
        ok = false;   /* a line needs a byte and its '\n' */
    }
    if (!ok || optind != argc || o->port == NULL) {
        usage(stderr);
        return -1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    static bench_t b;
    struct epoll_event events[MAX_EVENTS];
    uint64_t start;
    uint64_t window_start;
    uint64_t window_end;
    uint64_t measured_ns = 0;
    double client_cpu = 0;
    double server_cpu = -1;
    double busy_cpu = -1;
    int status = 1;

    if (parse_options(argc, argv, &b.opt) < 0) {
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    b.epfd = epoll_create1(EPOLL_CLOEXEC);
    b.conns = calloc((size_t)b.opt.connections, sizeof(conn_t));
    b.pattern = malloc((size_t)b.opt.size + PATTERN_SPAN);
    b.rx_buf = malloc(RX_BUF_LEN);
    if (b.epfd < 0 || b.conns == NULL || b.pattern == NULL ||
        b.rx_buf == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    srand((unsigned)now_ns());
    for (long i = 0; i < b.opt.size + PATTERN_SPAN; i++) {
        b.pattern[i] = (unsigned char)(rand() >> 7);
        if (b.opt.lines) {
            b.pattern[i] = (unsigned char)('!' + b.pattern[i] % 94);
        }
    }
    for (long i = 0; i < b.opt.connections; i++) {
        b.conns[i].fd = -1;
    }
    if (b.opt.tls && setup_tls(&b) < 0) {
        fprintf(stderr, "loadgen: cannot set up TLS\n");
        return 1;
    }
    if (open_connections(&b) < 0) {
        b.errors += (uint64_t)(b.opt.connections - b.connected);
        report(&b, 0, 0, -1, -1);
        goto out;
    }

    start = now_ns();
    window_start = start + (uint64_t)(b.opt.warmup_s * 1e9);
    window_end = window_start + (uint64_t)(b.opt.duration_s * 1e9);
    for (long i = 0; i < b.connected; i++) {
        top_up(&b, &b.conns[i]);
        flush_out(&b, &b.conns[i]);
    }
    for (;;) {
        uint64_t now = now_ns();
        uint64_t edge = b.measuring ? window_end : window_start;
        int timeout_ms;
        int n;

        if (!b.measuring && now >= window_start) {
            b.measuring = true;
            client_cpu = cpu_self_s();
            busy_cpu = cpu_of_machine_s();
            if (b.opt.sample_pid > 0) {
                server_cpu = cpu_of_pid_s(b.opt.sample_pid);
            }
            window_start = now;
            window_end = now + (uint64_t)(b.opt.duration_s * 1e9);
            continue;
        }
        if (b.measuring && now >= window_end) {
            client_cpu = cpu_self_s() - client_cpu;
            if (busy_cpu >= 0) {
                double end_busy = cpu_of_machine_s();

                busy_cpu = end_busy >= 0 ? end_busy - busy_cpu : -1;
            }
            if (server_cpu >= 0) {
                double end_cpu = cpu_of_pid_s(b.opt.sample_pid);

                server_cpu = end_cpu >= 0 ? end_cpu - server_cpu : -1;
            }
            measured_ns = now - window_start;
            break;
        }
        if (b.alive == 0) {
            fprintf(stderr, "loadgen: every connection failed\n");
            break;
        }
        timeout_ms = (int)((edge - now + 999999) / 1000000);
        n = epoll_wait(b.epfd, events, MAX_EVENTS, timeout_ms);
        if (n < 0 && errno != EINTR) {
            perror("loadgen: epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;

            if (c->dead) {
                continue;
            }
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                on_readable(&b, c);
            }
            if (!c->dead && (events[i].events & EPOLLOUT)) {
                flush_out(&b, c);
            }
        }
    }

    /* A message that never comes back stalls its connection without any
     * byte being wrong: count it. */
    for (long i = 0; i < b.connected; i++) {
        conn_t *c = &b.conns[i];

        if (!c->dead && c->tx_seq > c->rx_seq &&
            now_ns() - c->queued_ns[c->rx_seq % (uint64_t)b.opt.depth] >
                STALL_NS) {
            conn_fail(&b, c, "no echo for over a second");
        }
    }
    if (b.measuring && measured_ns == 0) {
        /* Every connection failed inside the window. */
        measured_ns = now_ns() - window_start;
        client_cpu = cpu_self_s() - client_cpu;
        server_cpu = -1;
        busy_cpu = -1;
    }
    status = report(&b, measured_ns, client_cpu, server_cpu, busy_cpu);

out:
    for (long i = 0; i < b.opt.connections; i++) {
        conn_t *c = &b.conns[i];

        SSL_free(c->ssl);
        if (c->fd >= 0) {
            close(c->fd);
        }
        free(c->expect);
        free(c->out);
        free(c->queued_ns);
    }
    SSL_CTX_free(b.ssl_ctx);
    free(b.conns);
    free(b.pattern);
    free(b.rx_buf);
    close(b.epfd);
    return status;
}
