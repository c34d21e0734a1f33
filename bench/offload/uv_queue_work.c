/* bench/offload/uv_queue_work.c: round trips through libuv's thread pool,
 * the C reference for twincore's pool in the offload benchmarks.
 *
 * The work function does a few arithmetic operations, so what is measured
 * is the pool itself: queueing, waking a worker, and bringing the result
 * back to the loop thread (after_work).
 *   1. Throughput: --inflight tasks (1,000) stay queued; each completion
 *      submits the next. After a short warmup, completions are counted for
 *      --duration seconds: tasks per second.
 *   2. Latency: one task at a time, from uv_queue_work() to its after_work
 *      callback, for --duration seconds: p50 and p99 in microseconds.
 * Prints one JSON line with the same field names every offload program
 * uses: tasks_per_s, p50_us, p99_us.
 *
 * usage: uv_queue_work [--inflight N] [--duration SEC] [--threads N]
 * --threads sets UV_THREADPOOL_SIZE (libuv's default is 4).
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define WARMUP_NS 200000000u    /* 0.2 s before counting */
#define MAX_SAMPLES 1000000

typedef struct task {
    uv_work_t req;              /* first: req.data is not needed */
    uint64_t value;
    uint64_t submitted_ns;
} task_t;

typedef struct bench {
    uv_loop_t *loop;
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

static void
work(uv_work_t *req)
{
    task_t *t = (task_t *)req;

    t->value = t->value * 6364136223846793005u + 1442695040888963407u;
}

static void after_throughput(uv_work_t *req, int status);
static void after_latency(uv_work_t *req, int status);

static void
submit(task_t *t, uv_after_work_cb after)
{
    t->submitted_ns = uv_hrtime();
    if (uv_queue_work(b.loop, &t->req, work, after) != 0) {
        b.failed = true;
    }
}

static void
after_throughput(uv_work_t *req, int status)
{
    uint64_t now = uv_hrtime();

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
        submit((task_t *)req, after_throughput);
    }
}

static void
after_latency(uv_work_t *req, int status)
{
    task_t *t = (task_t *)req;
    uint64_t now = uv_hrtime();

    if (status != 0) {
        b.failed = true;
        return;
    }
    if (now - b.start_ns >= WARMUP_NS / 4 && b.nsamples < MAX_SAMPLES) {
        b.samples[b.nsamples++] = now - t->submitted_ns;
    }
    if (now < b.end_ns && b.nsamples < MAX_SAMPLES) {
        submit(t, after_latency);
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
    const char *threads = getenv("UV_THREADPOOL_SIZE");
    task_t *tasks;
    task_t one = {.value = 1};
    double tasks_per_s;
    int ch;

    while ((ch = getopt_long(argc, argv, "n:d:t:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'n':
            inflight = strtol(optarg, NULL, 10);
            break;
        case 'd':
            duration = strtod(optarg, NULL);
            break;
        case 't':
            threads = optarg;
            break;
        default:
            fprintf(stderr, "usage: uv_queue_work [--inflight N] "
                            "[--duration SEC] [--threads N]\n");
            return ch == 'h' ? 0 : 2;
        }
    }
    if (inflight < 1 || inflight > 1000000 || !(duration > 0) ||
        duration > 600 || (threads != NULL && atoi(threads) < 1)) {
        fprintf(stderr, "uv_queue_work: bad argument\n");
        return 2;
    }
    /* libuv reads this once, when the pool starts on the first submit. */
    if (threads != NULL) {
        setenv("UV_THREADPOOL_SIZE", threads, 1);
    }
    tasks = calloc((size_t)inflight, sizeof(*tasks));
    b.samples = malloc(MAX_SAMPLES * sizeof(uint64_t));
    b.loop = uv_default_loop();
    if (tasks == NULL || b.samples == NULL || b.loop == NULL) {
        fprintf(stderr, "uv_queue_work: out of memory\n");
        return 1;
    }

    b.start_ns = uv_hrtime();
    b.end_ns = b.start_ns + (uint64_t)(duration * 1e9);
    for (long i = 0; i < inflight; i++) {
        tasks[i].value = (uint64_t)i;
        submit(&tasks[i], after_throughput);
    }
    uv_run(b.loop, UV_RUN_DEFAULT);
    tasks_per_s = b.last_ns > b.count_start_ns
                      ? (double)b.completed * 1e9 /
                            (double)(b.last_ns - b.count_start_ns)
                      : 0;

    b.start_ns = uv_hrtime();
    b.end_ns = b.start_ns + (uint64_t)(duration * 1e9);
    submit(&one, after_latency);
    uv_run(b.loop, UV_RUN_DEFAULT);
    qsort(b.samples, b.nsamples, sizeof(uint64_t), compare_u64);

    printf("{\"bench\": \"uv_queue_work\", \"threads\": %d, "
           "\"inflight\": %ld, \"tasks_per_s\": %.1f, \"tasks\": %llu, "
           "\"p50_us\": %.2f, \"p99_us\": %.2f, \"samples\": %zu, "
           "\"errors\": %d}\n",
           threads != NULL ? atoi(threads) : 4, inflight, tasks_per_s,
           (unsigned long long)b.completed, percentile_us(0.50),
           percentile_us(0.99), b.nsamples, b.failed ? 1 : 0);
    uv_loop_close(b.loop);
    free(tasks);
    free(b.samples);
    return b.failed ? 1 : 0;
}
