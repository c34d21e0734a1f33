/* libFuzzer target: UDP receive and send (src/udp.c) against a raw peer
 * socket that the fuzzer drives, on 127.0.0.1.
 *
 * The peer sends datagrams of any size from 0 to 65507 bytes (and bigger,
 * which the kernel refuses); twincore receives them, pauses and resumes,
 * sends its own (copied when the socket is busy), connects to the peer or
 * to a port nobody listens on (ICMP errors come back as a status), and
 * the loop runs NOWAIT iterations.  Every byte of every datagram depends on
 * its sequence number and offset.
 *
 * Checked on every input: each datagram received is one that was sent,
 * whole, from the right address, in order (loopback may drop under
 * pressure, never corrupt or reorder); a NULL buffer comes only with a
 * negative status; nothing arrives while receiving is stopped; sends of
 * more than 65507 bytes are -EMSGSIZE; every queued datagram leaves or is
 * freed; tc_loop_close() returns 0 with no leak. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "twincore.h"

#define MAX_DGRAMS 256
#define MAX_DGRAM 65507
#define SEED_TO_TC 0x3333u
#define SEED_TO_PEER 0x4444u

typedef struct sent {
    uint32_t seq;
    uint32_t len;
} sent_t;

typedef struct fz_udp {
    tc_loop_t *loop;
    tc_udp_t *u;
    int peer;
    struct sockaddr_in peer_addr, tc_addr, dead_addr;
    bool receiving, closed;
    int errors;             /* negative statuses seen */
    /* peer -> twincore: sent in order; next_rx is the oldest not seen */
    sent_t to_tc[MAX_DGRAMS];
    int n_to_tc, next_rx;
    /* twincore -> peer */
    sent_t to_peer[MAX_DGRAMS];
    int n_to_peer, next_peer_rx;
    bool connected_dead;    /* twincore's default peer is the dead port */
    int sent_dead;          /* datagrams sent to the dead port */
    uint8_t buf[65536];
} fz_udp_t;

static uint64_t
dgram_seed(uint64_t base, uint32_t seq)
{
    return base * 1000003u + seq;
}

/* Match a received datagram with the oldest sent one it can be; the ones
 * skipped were dropped. */
static void
match(sent_t *list, int n, int *next, const uint8_t *buf, size_t len,
      uint64_t base)
{
    for (int i = *next; i < n; i++) {
        uint64_t seed = dgram_seed(base, list[i].seq);
        size_t k = 0;
        while (k < len && buf[k] == fz_byte(seed, k)) {
            k++;
        }
        if (list[i].len == len && k == len) {
            *next = i + 1;
            return;
        }
    }
    fprintf(stderr, "datagram of %zu bytes matches none of #%d..#%d\n", len,
            *next, n - 1);
    CHECK(!"a datagram that was never sent, or out of order");
}

static void
on_recv(tc_udp_t *u, const char *buf, size_t len, const struct sockaddr *from,
        socklen_t fromlen, int status)
{
    fz_udp_t *f = tc_handle_data(tc_udp_handle(u));
    CHECK(!f->closed);
    CHECK(f->receiving);
    if (buf == NULL) {
        CHECK(status < 0 && len == 0);
        f->errors++;
        return;
    }
    CHECK(status == 0);
    CHECK(from != NULL && fromlen == sizeof(struct sockaddr_in));
    const struct sockaddr_in *sin = (const struct sockaddr_in *)from;
    CHECK(sin->sin_family == AF_INET &&
          sin->sin_port == f->peer_addr.sin_port);
    match(f->to_tc, f->n_to_tc, &f->next_rx, (const uint8_t *)buf, len,
          SEED_TO_TC);
}

static void
on_close(tc_handle_t *h)
{
    fz_udp_t *f = tc_handle_data(h);
    f->closed = true;
}

static void
peer_send(fz_udp_t *f, size_t len)
{
    if (f->n_to_tc >= MAX_DGRAMS) {
        return;
    }
    uint32_t seq = (uint32_t)f->n_to_tc;
    fz_fill(f->buf, len, dgram_seed(SEED_TO_TC, seq), 0);
    ssize_t n = sendto(f->peer, f->buf, len, MSG_DONTWAIT,
                       (struct sockaddr *)&f->tc_addr, sizeof(f->tc_addr));
    if (n >= 0) {
        CHECK((size_t)n == len);
        f->to_tc[f->n_to_tc++] = (sent_t){seq, (uint32_t)len};
    } else {
        CHECK(len > MAX_DGRAM || errno == EAGAIN || errno == ENOBUFS);
    }
}

static void
peer_recv_all(fz_udp_t *f)
{
    for (;;) {
        struct sockaddr_in from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(f->peer, f->buf, sizeof(f->buf), MSG_DONTWAIT,
                             (struct sockaddr *)&from, &fl);
        if (n < 0) {
            return;
        }
        CHECK(from.sin_port == f->tc_addr.sin_port);
        match(f->to_peer, f->n_to_peer, &f->next_peer_rx, f->buf, (size_t)n,
              SEED_TO_PEER);
    }
}

static void
tc_send(fz_udp_t *f, size_t len, bool dead, bool by_name)
{
    if (f->closed || f->n_to_peer >= MAX_DGRAMS) {
        return;
    }
    uint32_t seq = (uint32_t)f->n_to_peer;
    fz_fill(f->buf, len < sizeof(f->buf) ? len : sizeof(f->buf),
            dgram_seed(SEED_TO_PEER, seq), 0);
    const struct sockaddr_in *to = dead ? &f->dead_addr : &f->peer_addr;
    int rc;
    if (f->connected_dead) {
        rc = tc_udp_send(f->u, f->buf, len, NULL, 0);
    } else if (by_name) {
        rc = tc_udp_send_to(f->u, f->buf, len, "127.0.0.1",
                            ntohs(to->sin_port));
    } else {
        rc = tc_udp_send(f->u, f->buf, len, (const struct sockaddr *)to,
                         sizeof(*to));
    }
    if (len > MAX_DGRAM) {
        CHECK(rc == -EMSGSIZE);
        return;
    }
    /* An ICMP error from an earlier send may surface here instead. */
    CHECK(rc == 0 || rc == -ECONNREFUSED);
    if (dead || f->connected_dead) {
        f->sent_dead++;
    }
    if (rc == 0 && !dead && !f->connected_dead) {
        f->to_peer[f->n_to_peer++] = (sent_t){seq, (uint32_t)len};
    }
}

static void
run_nowait(fz_udp_t *f, int n)
{
    for (int i = 0; i < n; i++) {
        CHECK(tc_loop_run(f->loop, TC_RUN_NOWAIT) >= 0);
    }
}

static size_t
dgram_len(fz_in_t *in)
{
    uint8_t k = fz_u8(in);
    switch (k % 4) {
    case 0:
        return k / 4;                   /* tiny, zero included */
    case 1:
        return fz_u16(in) % 2048;
    case 2:
        return fz_u16(in);              /* up to 65535: some too big */
    default:
        return MAX_DGRAM - (k / 4) % 3 + 1;     /* the edge */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fz_udp_t state;
    fz_udp_t *f = &state;
    fz_in_t in = {data, size};
    socklen_t len;
    int rc;

    memset(f, 0, sizeof(*f));
    CHECK(tc_loop_new(&f->loop) == 0);
    CHECK(tc_udp_bind(f->loop, "127.0.0.1", 0, NULL, f, &f->u) == 0);
    len = sizeof(f->tc_addr);
    CHECK(tc_udp_sockname(f->u, (struct sockaddr *)&f->tc_addr, &len) == 0);
    f->peer = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(f->peer >= 0);
    f->peer_addr.sin_family = AF_INET;
    f->peer_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(f->peer, (struct sockaddr *)&f->peer_addr,
               sizeof(f->peer_addr)) == 0);
    len = sizeof(f->peer_addr);
    CHECK(getsockname(f->peer, (struct sockaddr *)&f->peer_addr, &len) == 0);
    /* A port nobody listens on: bind one, note it, close it. */
    int dead = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(dead >= 0);
    f->dead_addr = f->peer_addr;
    f->dead_addr.sin_port = 0;
    CHECK(bind(dead, (struct sockaddr *)&f->dead_addr,
               sizeof(f->dead_addr)) == 0);
    len = sizeof(f->dead_addr);
    CHECK(getsockname(dead, (struct sockaddr *)&f->dead_addr, &len) == 0);
    close(dead);

    CHECK(tc_udp_recv_start(f->u, on_recv) == 0);
    f->receiving = true;
    while (in.n > 0 && !f->closed) {
        uint8_t code = fz_u8(&in);
        switch (code % 10) {
        case 0:
        case 1:
        case 2:
            peer_send(f, dgram_len(&in));
            break;
        case 3:
            tc_send(f, dgram_len(&in), false, code & 16);
            break;
        case 4:
            tc_send(f, dgram_len(&in), true, code & 16);
            break;
        case 5:
            CHECK(tc_udp_recv_stop(f->u) == 0);
            f->receiving = false;
            break;
        case 6:
            CHECK(tc_udp_recv_start(f->u, on_recv) == 0);
            f->receiving = true;
            break;
        case 7:
            peer_recv_all(f);
            break;
        case 8:
            /* Connect to the dead port (ICMP errors come back), or back
             * to the peer. */
            f->connected_dead = code & 16;
            rc = tc_udp_connect(f->u, "127.0.0.1",
                                ntohs((f->connected_dead ? &f->dead_addr
                                                         : &f->peer_addr)
                                          ->sin_port));
            CHECK(rc == 0);
            break;
        case 9:
            run_nowait(f, fz_u8(&in) % 8 + 1);
            break;
        }
    }
    /* Let everything queued go, and everything sent arrive. */
    for (int i = 0; i < 1000 && tc_udp_send_queue_size(f->u) > 0; i++) {
        run_nowait(f, 1);
        peer_recv_all(f);
    }
    CHECK(tc_udp_send_queue_size(f->u) == 0);
    if (!f->receiving) {
        CHECK(tc_udp_recv_start(f->u, on_recv) == 0);
        f->receiving = true;
    }
    run_nowait(f, 4);
    peer_recv_all(f);
    /* A receive status is an ICMP error: only after sends to the dead
     * port. */
    CHECK(f->errors == 0 || f->sent_dead > 0);
    CHECK(tc_close(tc_udp_handle(f->u), on_close) == 0);
    for (int i = 0; i < 100 && !f->closed; i++) {
        run_nowait(f, 1);
    }
    CHECK(f->closed);
    close(f->peer);
    CHECK(tc_loop_close(f->loop) == 0);
    return 0;
}
