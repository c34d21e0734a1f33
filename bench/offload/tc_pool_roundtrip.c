/* bench/offload/tc_pool_roundtrip.c: round trips through twincore's pool,
 * measured exactly as uv_queue_work.c measures libuv's.
 *
 * The work function does a few arithmetic operations, so what is measured
 * is the pool itself: queueing, waking a worker, and bringing the result
 * back to the submitting loop's thread (the done callback).
 *   1. Throughput: --inflight tasks (1,000) stay queued; each done callback
 *      submits the next. After a short warmup, completions are counted for
 *      --duration seconds: tasks per second.
 *   2. Latency: one task at a time, from tc_pool_submit() to its done
 *      callback, for --duration seconds: p50 and p99 in microseconds.
 * Prints one JSON line with the field names every offload program uses:
 * tasks_per_s, p50_us, p99_us.
 *
 * usage: tc_pool_roundtrip [--inflight N] [--duration SEC] [--threads N]
 * --threads is the number of workers (default 2, as the other peers).
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <twincore.h>

#define WARMUP_NS 200000000u    /* 0.2 s before counting */
#define MAX_SAMPLES 1000000

typedef struct task {
    uint64_t value;
    uint64_t submitted_ns;
} task_t;

typedef struct bench {
    tc_loop_t *loop;
    tc_pool_t *pool;
    uint64_t start_ns;
    uint64_t count_start_ns;
    uint64_t end_ns;            /* no new task is submitted after this */
    uint64_t last_ns;           /* the last completion counted */
    uint64_t completed;         /* completions counted after the warmup */
    bool counting;
    bool failed;
    uint64_t *samples;
    size_t nsamples;
} bench_t;

static bench_t b;

static inline uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Thread: worker. */
static int
work(tc_work_t *w, void *arg)
{
    task_t *t = arg;

    (void)w;
    t->value = t->value * 6364136223846793005u + 1442695040888963407u;
    return 0;
}

static void
submit(task_t *t, tc_work_done_cb done)
{
    t->submitted_ns = now_ns();
    if (tc_pool_submit(b.pool, b.loop, work, done, t, TC_PRIORITY_NORMAL,
                       NULL) != 0) {
        b.failed = true;
    }
}

static void
done_throughput(tc_work_t *w, int status, void *arg)
{
    uint64_t now = now_ns();

    (void)w;
    if (status != 0) {
        b.failed = true;
        return;
    }
    if (!b.counting && now - b.start_ns >= WARMUP_NS) {
        b.counting = true;
        b.count_start_ns = now;
        b.end_ns += now - b.start_ns;
    } else if (b.counting && now < b.end_ns) {
        b.completed++;
        b.last_ns = now;
    }
    if (now < b.end_ns) {
        submit(arg, done_throughput);
    }
}

static void
done_latency(tc_work_t *w, int status, void *arg)
{
    task_t *t = arg;
    uint64_t now = now_ns();

    (void)w;
    if (status != 0) {
        b.failed = true;
        return;
    }
    if (now - b.start_ns >= WARMUP_NS / 4 && b.nsamples < MAX_SAMPLES) {
        b.samples[b.nsamples++] = now - t->submitted_ns;
    }
    if (now < b.end_ns && b.nsamples < MAX_SAMPLES) {
        submit(t, done_latency);
    }
}

static int
compare_u64(const void *a, const void *c)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)c;

    return x < y ? -1 : x > y;
}

static double
percentile_us(double q)
{
    size_t i;

    if (b.nsamples == 0) {
        return 0;
    }
    i = (size_t)(q * (double)(b.nsamples - 1) + 0.5);
    return (double)b.samples[i] / 1000.0;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"inflight", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'},
        {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long inflight = 1000;
    double duration = 2.0;
    long threads = 2;
    tc_pool_opts_t opts;
    task_t *tasks;
    task_t one = {.value = 1};
    double tasks_per_s;
    int ch;
    int err;

    while ((ch = getopt_long(argc, argv, "n:d:t:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'n':
            inflight = strtol(optarg, NULL, 10);
            break;
        case 'd':
            duration = strtod(optarg, NULL);
            break;
        case 't':
            threads = strtol(optarg, NULL, 10);
            break;
        default:
            fprintf(stderr, "usage: tc_pool_roundtrip [--inflight N] "
                            "[--duration SEC] [--threads N]\n");
            return ch == 'h' ? 0 : 2;
        }
    }
    if (inflight < 1 || inflight > 1000000 || !(duration > 0) ||
        duration > 600 || threads < 1 || threads > 256) {
        fprintf(stderr, "tc_pool_roundtrip: bad argument\n");
        return 2;
    }
    memset(&opts, 0, sizeof(opts));
    opts.threads = (unsigned)threads;
    tasks = calloc((size_t)inflight, sizeof(*tasks));
    b.samples = malloc(MAX_SAMPLES * sizeof(uint64_t));
    if (tasks == NULL || b.samples == NULL) {
        fprintf(stderr, "tc_pool_roundtrip: out of memory\n");
        return 1;
    }
    if ((err = tc_loop_new(&b.loop)) != 0 ||
        (err = tc_pool_new(&opts, &b.pool)) != 0) {
        fprintf(stderr, "tc_pool_roundtrip: %s\n", tc_strerror(err));
        return 1;
    }

    /* Work submitted from the loop's thread keeps tc_loop_run() going
     * until its done callback ran: the run ends when the last task is in. */
    b.start_ns = now_ns();
    b.end_ns = b.start_ns + (uint64_t)(duration * 1e9);
    for (long i = 0; i < inflight; i++) {
        tasks[i].value = (uint64_t)i;
        submit(&tasks[i], done_throughput);
    }
    tc_loop_run(b.loop, TC_RUN_DEFAULT);
    tasks_per_s = b.last_ns > b.count_start_ns
                      ? (double)b.completed * 1e9 /
                            (double)(b.last_ns - b.count_start_ns)
                      : 0;

    b.start_ns = now_ns();
    b.end_ns = b.start_ns + (uint64_t)(duration * 1e9);
    submit(&one, done_latency);
    tc_loop_run(b.loop, TC_RUN_DEFAULT);
    qsort(b.samples, b.nsamples, sizeof(uint64_t), compare_u64);

    printf("{\"bench\": \"tc_pool_roundtrip\", \"threads\": %ld, "
           "\"inflight\": %ld, \"tasks_per_s\": %.1f, \"tasks\": %llu, "
           "\"p50_us\": %.2f, \"p99_us\": %.2f, \"samples\": %zu, "
           "\"errors\": %d}\n",
           threads, inflight, tasks_per_s, (unsigned long long)b.completed,
           percentile_us(0.50), percentile_us(0.99), b.nsamples,
           b.failed ? 1 : 0);
    tc_pool_free(b.pool);
    if ((err = tc_loop_close(b.loop)) != 0) {
        fprintf(stderr, "tc_pool_roundtrip: tc_loop_close: %s\n",
                tc_strerror(err));
        b.failed = true;
    }
    free(tasks);
    free(b.samples);
    return b.failed ? 1 : 0;
}
