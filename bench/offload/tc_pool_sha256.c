/* bench/offload/tc_pool_sha256.c: how twincore's pool scales with workers,
 * hashing 1 MiB buffers with SHA-256 (OpenSSL's EVP digests).
 *
 * For each worker count (1 and 2 by default) a pool of that size hashes
 * buffers for a window: --inflight buffers (default 2 per worker, so no
 * worker waits for the loop) stay queued and each done callback submits
 * the next, on the loop's thread. After a warmup of 0.1 s, completions are
 * counted: buffers per second. The windows run in the order 1, 2, 2, 1
 * (each half of --duration), so a machine whose speed drifts during the
 * run does not favour either count. Prints one JSON line:
 *   {"per_s": {"1": ..., "2": ...}, "ratio": per_s[2] / per_s[1], ...}
 *
 * usage: tc_pool_sha256 [--duration SEC] [--size BYTES] [--inflight N]
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <twincore.h>

#define WARMUP_NS 100000000u    /* 0.1 s before counting */
#define MAX_INFLIGHT 64
#define COUNTS 2                /* worker counts: 1 and 2 */

typedef struct slot {
    const unsigned char *buf;
    unsigned char digest[EVP_MAX_MD_SIZE];
} slot_t;

typedef struct window {
    tc_loop_t *loop;
    tc_pool_t *pool;
    uint64_t start_ns;
    uint64_t count_start_ns;
    uint64_t end_ns;
    uint64_t last_ns;
    uint64_t completed;
    bool counting;
    bool failed;
} window_t;

static window_t w;
static EVP_MD *sha256;      /* fetched once; EVP_Digest is thread-safe */
static size_t size = 1024 * 1024;

static inline uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Thread: worker. */
static int
hash(tc_work_t *work, void *arg)
{
    slot_t *s = arg;
    unsigned int len = 0;

    (void)work;
    return EVP_Digest(s->buf, size, s->digest, &len, sha256, NULL) == 1
               ? 0
               : -EIO;
}

static void hashed(tc_work_t *work, int status, void *arg);

static void
submit(slot_t *s)
{
    if (tc_pool_submit(w.pool, w.loop, hash, hashed, s, TC_PRIORITY_NORMAL,
                       NULL) != 0) {
        w.failed = true;
    }
}

static void
hashed(tc_work_t *work, int status, void *arg)
{
    uint64_t now = now_ns();

    (void)work;
    if (status != 0) {
        w.failed = true;
        return;
    }
    if (!w.counting && now - w.start_ns >= WARMUP_NS) {
        w.counting = true;
        w.count_start_ns = now;
        w.end_ns += now - w.start_ns;
    } else if (w.counting && now < w.end_ns) {
        w.completed++;
        w.last_ns = now;
    }
    if (now < w.end_ns) {
        submit(arg);
    }
}

/* One window with a fresh pool of `workers` threads; adds what it counted
 * to *tasks and *ns. */
static int
run_window(tc_loop_t *loop, unsigned workers, slot_t *slots, long inflight,
           double seconds, uint64_t *tasks, uint64_t *ns)
{
    tc_pool_opts_t opts;
    int err;

    memset(&opts, 0, sizeof(opts));
    opts.threads = workers;
    memset(&w, 0, sizeof(w));
    w.loop = loop;
    if ((err = tc_pool_new(&opts, &w.pool)) != 0) {
        return err;
    }
    w.start_ns = now_ns();
    w.end_ns = w.start_ns + (uint64_t)(seconds * 1e9);
    for (long i = 0; i < inflight; i++) {
        submit(&slots[i]);
    }
    tc_loop_run(loop, TC_RUN_DEFAULT);
    tc_pool_free(w.pool);
    if (w.failed) {
        return -EIO;
    }
    if (w.last_ns > w.count_start_ns) {
        *tasks += w.completed;
        *ns += w.last_ns - w.count_start_ns;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"duration", required_argument, NULL, 'd'},
        {"size", required_argument, NULL, 's'},
        {"inflight", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const unsigned order[] = {1, 2, 2, 1};
    double duration = 2.0;
    long inflight = 0;      /* 0: 2 per worker */
    uint64_t tasks[COUNTS + 1] = {0};
    uint64_t ns[COUNTS + 1] = {0};
    double per_s[COUNTS + 1];
    unsigned char *bufs;
    slot_t slots[MAX_INFLIGHT];
    tc_loop_t *loop;
    uint64_t seed = 88172645463325252u;
    int ch;
    int err = 0;

    while ((ch = getopt_long(argc, argv, "d:s:n:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'd':
            duration = strtod(optarg, NULL);
            break;
        case 's':
            size = (size_t)strtoul(optarg, NULL, 10);
            break;
        case 'n':
            inflight = strtol(optarg, NULL, 10);
            break;
        default:
            fprintf(stderr, "usage: tc_pool_sha256 [--duration SEC] "
                            "[--size BYTES] [--inflight N]\n");
            return ch == 'h' ? 0 : 2;
        }
    }
    if (!(duration > 0) || duration > 600 || size < 1 ||
        size > 256u * 1024 * 1024 || inflight < 0 ||
        inflight > MAX_INFLIGHT) {
        fprintf(stderr, "tc_pool_sha256: bad argument\n");
        return 2;
    }
    /* Every window keeps the same number in flight: enough for 2 workers. */
    if (inflight == 0) {
        inflight = 2 * COUNTS;
    }
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    bufs = malloc((size_t)inflight * size);
    if (sha256 == NULL || bufs == NULL) {
        fprintf(stderr, "tc_pool_sha256: cannot set up\n");
        return 1;
    }
    /* Distinct pseudo-random buffers, one per task in flight. */
    for (size_t i = 0; i < (size_t)inflight * size; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        bufs[i] = (unsigned char)seed;
    }
    for (long i = 0; i < inflight; i++) {
        slots[i].buf = bufs + (size_t)i * size;
    }
    if ((err = tc_loop_new(&loop)) != 0) {
        fprintf(stderr, "tc_pool_sha256: %s\n", tc_strerror(err));
        return 1;
    }
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        unsigned n = order[i];

        err = run_window(loop, n, slots, inflight, duration / 2, &tasks[n],
                         &ns[n]);
        if (err != 0) {
            fprintf(stderr, "tc_pool_sha256: %s\n", tc_strerror(err));
            break;
        }
    }
    for (unsigned n = 1; n <= COUNTS; n++) {
        per_s[n] = ns[n] > 0 ? (double)tasks[n] * 1e9 / (double)ns[n] : 0;
    }
    printf("{\"bench\": \"tc_pool_sha256\", \"size\": %zu, "
           "\"inflight\": %ld, \"per_s\": {\"1\": %.2f, \"2\": %.2f}, "
           "\"ratio\": %.4f, \"buffers\": {\"1\": %llu, \"2\": %llu}, "
           "\"errors\": %d}\n",
           size, inflight, per_s[1], per_s[2],
           per_s[1] > 0 ? per_s[2] / per_s[1] : 0,
           (unsigned long long)tasks[1], (unsigned long long)tasks[2],
           err != 0);
    if (tc_loop_close(loop) != 0) {
        err = -EBUSY;
    }
    EVP_MD_free(sha256);
    free(bufs);
    return err != 0 ? 1 : 0;
}
