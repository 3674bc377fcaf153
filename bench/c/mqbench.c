/* mqbench: the C side of `make bench` (driven by bench/cmd/bench).

   Each mode runs one scenario against the libmetricq C library and prints
   one JSON object on stdout. Times are mq_now() nanoseconds (CLOCK_REALTIME),
   the clock the driver's sink uses, so "start_ns" to the sink's receipt of
   the last point is the end-to-end time.

     mqbench send    URL TOKEN PREFIX THREADS POINTS CHUNK [handle]
         THREADS threads, one source; thread i sends POINTS/THREADS points,
         one mq_source_send each, to metric PREFIX.i (chunk size CHUNK);
         with "handle", one mq_metric_send each, by the metric's handle.
     mqbench batch   URL TOKEN PREFIX POINTS CHUNK BATCH
         mq_source_send_batch of BATCH points at a time to PREFIX.0.
     mqbench latency URL TOKEN PREFIX RATE SECONDS
         chunk size 1; one point every 1/RATE s for SECONDS, each stamped
         with mq_now() just before its send.
     mqbench startup URL TOKEN ITERATIONS
         mq_source_new (to ready) and mq_source_free, ITERATIONS times.
     mqbench rss     URL TOKEN PREFIX POINTS MAX_BUFFERED
         chunk size 1000 and the given buffer bound (0: the default); sends
         POINTS points, samples the buffered points, flushes, then reads
         VmHWM and VmRSS from /proc/self/status.
     mqbench scale   URL TOKEN PREFIX METRICS POINTS CHUNK [handle]
         declares PREFIX.0 … PREFIX.<METRICS-1> in one mq_source_declare_many
         call (timed; VmRSS before and after); then a warm-up round, one
         point to every metric (its first: the sending thread's CPU per
         point, apart); then POINTS points round-robin over all of them (the
         sending thread's CPU per point; VmRSS after), then flushes. One
         mq_source_send per point; with "handle", one mq_metric_send, by
         handles taken with mq_source_metric before the warm-up. "points"
         in the output is POINTS, without the warm-up's METRICS.

   Timestamps advance by 1 us per point, which gives DataChunks of the same
   size as the driver's pre-encoded ones. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metricq.h"

#define TIMEOUT 60.0
#define STEP_NS 1000

static void die(const char *what, int status) {
    fprintf(stderr, "mqbench: %s: %s (%d): %s\n", what, mq_strerror(status), status, mq_last_error());
    exit(1);
}

static long long arg_ll(const char *s, const char *what) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 0) {
        fprintf(stderr, "mqbench: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

static mq_source *connect_source(const char *url, const char *token, int64_t chunk, int64_t max_buffered) {
    mq_source *src = mq_source_create(url, token);
    if (!src) die("mq_source_create", MQ_ERR_INVALID);
    int rc;
    if (max_buffered > 0 && (rc = mq_source_set_max_buffered(src, max_buffered))) die("set_max_buffered", rc);
    if ((rc = mq_source_set_chunk_size(src, NULL, chunk))) die("set_chunk_size", rc);
    if ((rc = mq_source_connect(src, TIMEOUT))) die("connect", rc);
    return src;
}

static void declare(mq_source *src, const char *metric) {
    int rc = mq_source_declare(src, metric, "{\"unit\": \"\", \"rate\": 1000000}", TIMEOUT);
    if (rc) die("declare", rc);
}

static void finish(mq_source *src) {
    int rc = mq_source_flush(src, TIMEOUT);
    if (rc) die("flush", rc);
}

/* --- send: per-point sends from THREADS threads ---------------------------- */

struct worker {
    mq_source *src;
    mq_metric *handle; /* sends by handle when set, by name otherwise */
    char metric[256];
    int64_t points;
    int64_t t0;
    pthread_barrier_t *go;
    int64_t done_ns;
    int64_t cpu_ns; /* the thread's CPU time in the send loop */
};

static int64_t thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *send_worker(void *arg) {
    struct worker *w = arg;
    int64_t t = w->t0;
    double v = 0.5;
    pthread_barrier_wait(w->go);
    int64_t cpu0 = thread_cpu_ns();
    for (int64_t i = 0; i < w->points; i++) {
        t += STEP_NS;
        int rc = w->handle ? mq_metric_send(w->handle, t, v, TIMEOUT) : mq_source_send(w->src, w->metric, t, v, TIMEOUT);
        if (rc) die(w->handle ? "mq_metric_send" : "mq_source_send", rc);
        v += 1.0;
    }
    w->cpu_ns = thread_cpu_ns() - cpu0;
    w->done_ns = mq_now();
    return NULL;
}

static int mode_send(int argc, char **argv) {
    if (argc != 8 && !(argc == 9 && !strcmp(argv[8], "handle"))) return 2;
    int by_handle = argc == 9;
    const char *url = argv[2], *token = argv[3], *prefix = argv[4];
    int threads = (int)arg_ll(argv[5], "THREADS");
    int64_t points = arg_ll(argv[6], "POINTS"), chunk = arg_ll(argv[7], "CHUNK");
    if (threads < 1) return 2;
    mq_source *src = connect_source(url, token, chunk, 0);
    struct worker *ws = calloc((size_t)threads, sizeof *ws);
    pthread_t *ts = calloc((size_t)threads, sizeof *ts);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
    int64_t t0 = mq_now();
    for (int i = 0; i < threads; i++) {
        snprintf(ws[i].metric, sizeof ws[i].metric, "%s.%d", prefix, i);
        declare(src, ws[i].metric);
        ws[i].src = src;
        if (by_handle && !(ws[i].handle = mq_source_metric(src, ws[i].metric))) die("mq_source_metric", MQ_ERR_INVALID);
        ws[i].points = points / threads + (i < points % threads ? 1 : 0);
        ws[i].t0 = t0;
        ws[i].go = &go;
        pthread_create(&ts[i], NULL, send_worker, &ws[i]);
    }
    int64_t start = mq_now();
    pthread_barrier_wait(&go);
    int64_t sent = 0, cpu = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ts[i], NULL);
        if (ws[i].done_ns > sent) sent = ws[i].done_ns;
        cpu += ws[i].cpu_ns;
    }
    finish(src);
    int64_t flushed = mq_now();
    printf("{\"start_ns\": %" PRId64 ", \"sent_ns\": %" PRId64 ", \"flushed_ns\": %" PRId64
           ", \"points\": %" PRId64 ", \"cpu_ns_per_point\": %.1f}\n",
           start, sent, flushed, points, (double)cpu / (double)points);
    mq_source_free(src);
    return 0;
}

/* --- batch ------------------------------------------------------------------ */

static int mode_batch(int argc, char **argv) {
    if (argc != 8) return 2;
    const char *url = argv[2], *token = argv[3], *prefix = argv[4];
    int64_t points = arg_ll(argv[5], "POINTS"), chunk = arg_ll(argv[6], "CHUNK"), batch = arg_ll(argv[7], "BATCH");
    if (batch < 1) return 2;
    mq_source *src = connect_source(url, token, chunk, 0);
    char metric[256];
    snprintf(metric, sizeof metric, "%s.0", prefix);
    declare(src, metric);
    int64_t *times = malloc((size_t)batch * sizeof *times);
    double *values = malloc((size_t)batch * sizeof *values);
    int64_t t = mq_now();
    for (int64_t i = 0; i < batch; i++) values[i] = (double)i;
    int64_t start = mq_now(), cpu0 = thread_cpu_ns();
    for (int64_t done = 0; done < points;) {
        int64_t n = points - done < batch ? points - done : batch;
        /* Filling the arrays is part of the producer's work: timed. */
        for (int64_t i = 0; i < n; i++) times[i] = (t += STEP_NS);
        int rc = mq_source_send_batch(src, metric, times, values, (size_t)n, TIMEOUT);
        if (rc) die("mq_source_send_batch", rc);
        done += n;
    }
    int64_t sent = mq_now(), cpu = thread_cpu_ns() - cpu0;
    finish(src);
    int64_t flushed = mq_now();
    printf("{\"start_ns\": %" PRId64 ", \"sent_ns\": %" PRId64 ", \"flushed_ns\": %" PRId64
           ", \"points\": %" PRId64 ", \"cpu_ns_per_point\": %.2f}\n",
           start, sent, flushed, points, (double)cpu / (double)points);
    mq_source_free(src);
    return 0;
}

/* --- latency ------------------------------------------------------------------ */

static void sleep_until(int64_t ns) {
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static int mode_latency(int argc, char **argv) {
    if (argc != 7) return 2;
    const char *url = argv[2], *token = argv[3], *prefix = argv[4];
    int64_t rate = arg_ll(argv[5], "RATE"), seconds = arg_ll(argv[6], "SECONDS");
    if (rate < 1) return 2;
    mq_source *src = connect_source(url, token, 1, 0);
    char metric[256];
    snprintf(metric, sizeof metric, "%s.0", prefix);
    declare(src, metric);
    int64_t points = rate * seconds, period = 1000000000 / rate;
    int64_t start = mq_now(), next = start, last = 0;
    for (int64_t i = 0; i < points; i++) {
        sleep_until(next);
        next += period;
        int64_t t = mq_now();
        if (t <= last) t = last + 1;
        last = t;
        int rc = mq_source_send(src, metric, t, 1.0, TIMEOUT);
        if (rc) die("mq_source_send", rc);
    }
    int64_t sent = mq_now();
    finish(src);
    printf("{\"start_ns\": %" PRId64 ", \"sent_ns\": %" PRId64 ", \"points\": %" PRId64 "}\n", start, sent, points);
    mq_source_free(src);
    return 0;
}

/* --- startup ------------------------------------------------------------------ */

static int mode_startup(int argc, char **argv) {
    if (argc != 5) return 2;
    const char *url = argv[2], *token = argv[3];
    int64_t iterations = arg_ll(argv[4], "ITERATIONS");
    printf("{\"new_ns\": [");
    for (int64_t i = 0; i < iterations; i++) {
        char tok[300];
        snprintf(tok, sizeof tok, "%s-%" PRId64, token, i);
        int64_t t0 = mq_now();
        mq_source *src = mq_source_new(url, tok, TIMEOUT);
        int64_t t1 = mq_now();
        if (!src) die("mq_source_new", MQ_ERR_CONNECT);
        printf("%s%" PRId64, i ? ", " : "", t1 - t0);
        mq_source_free(src);
    }
    printf("]}\n");
    return 0;
}

/* --- rss ------------------------------------------------------------------------ */

static long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, n) && line[n] == ':') {
            kb = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static int mode_rss(int argc, char **argv) {
    if (argc != 7) return 2;
    const char *url = argv[2], *token = argv[3], *prefix = argv[4];
    int64_t points = arg_ll(argv[5], "POINTS"), max_buffered = arg_ll(argv[6], "MAX_BUFFERED");
    long before = status_kb("VmRSS");
    mq_source *src = connect_source(url, token, 1000, max_buffered);
    long connected = status_kb("VmRSS");
    char metric[256];
    snprintf(metric, sizeof metric, "%s.0", prefix);
    declare(src, metric);
    int64_t t = mq_now(), start = t;
    uint64_t max_seen = 0;
    mq_stats st;
    for (int64_t i = 0; i < points; i++) {
        int rc = mq_source_send(src, metric, t += STEP_NS, 1.0, TIMEOUT);
        if (rc) die("mq_source_send", rc);
        if ((i & 1023) == 0) {
            if ((rc = mq_source_stats(src, &st, sizeof st))) die("stats", rc);
            if (st.buffered_points > max_seen) max_seen = st.buffered_points;
        }
    }
    finish(src);
    long hwm = status_kb("VmHWM"), rss = status_kb("VmRSS");
    printf("{\"start_ns\": %" PRId64 ", \"points\": %" PRId64 ", \"rss_before_kb\": %ld, \"rss_connected_kb\": %ld"
           ", \"vmhwm_kb\": %ld, \"vmrss_kb\": %ld, \"max_buffered_seen\": %" PRIu64 ", \"max_buffered\": %" PRId64 "}\n",
           start, points, before, connected, hwm, rss, max_seen,
           max_buffered > 0 ? max_buffered : (int64_t)MQ_DEFAULT_MAX_BUFFERED);
    mq_source_free(src);
    return 0;
}

/* --- scale ------------------------------------------------------------------------ */

/* Sends one point to metric m: by handle when the handles are there. */
static int scale_send(mq_source *src, mq_metric **handles, const char *names, size_t name_room, int64_t m, int64_t t) {
    if (handles) return mq_metric_send(handles[m], t, 1.0, TIMEOUT);
    return mq_source_send(src, names + (size_t)m * name_room, t, 1.0, TIMEOUT);
}

static int mode_scale(int argc, char **argv) {
    if (argc != 8 && !(argc == 9 && !strcmp(argv[8], "handle"))) return 2;
    int by_handle = argc == 9;
    const char *url = argv[2], *token = argv[3], *prefix = argv[4];
    int64_t metrics = arg_ll(argv[5], "METRICS"), points = arg_ll(argv[6], "POINTS"), chunk = arg_ll(argv[7], "CHUNK");
    if (metrics < 1 || points < 1) return 2;
    mq_source *src = connect_source(url, token, chunk, 0);
    /* The names and the request are the host's own memory: built before
       the first VmRSS reading, freed only after the last. The handles (8
       bytes a metric) are taken after the idle reading. */
    size_t name_room = strlen(prefix) + 24;
    char *names = malloc((size_t)metrics * name_room);
    size_t json_room = (size_t)metrics * (name_room + 8) + 3, used = 0;
    char *json = malloc(json_room);
    mq_metric **handles = by_handle ? calloc((size_t)metrics, sizeof *handles) : NULL;
    if (!names || !json || (by_handle && !handles)) die("malloc", MQ_ERR_INTERNAL);
    json[used++] = '{';
    for (int64_t i = 0; i < metrics; i++) {
        char *name = names + (size_t)i * name_room;
        snprintf(name, name_room, "%s.%" PRId64, prefix, i);
        used += (size_t)snprintf(json + used, json_room - used, "%s\"%s\": {}", i ? ", " : "", name);
    }
    json[used++] = '}';
    json[used] = 0;
    long rss_connected = status_kb("VmRSS");
    int64_t declare0 = mq_now();
    int rc = mq_source_declare_many(src, json, TIMEOUT * 5);
    int64_t declared = mq_now();
    if (rc) die("mq_source_declare_many", rc);
    long rss_declared = status_kb("VmRSS");
    for (int64_t m = 0; by_handle && m < metrics; m++) {
        if (!(handles[m] = mq_source_metric(src, names + (size_t)m * name_room))) die("mq_source_metric", MQ_ERR_INVALID);
    }

    /* A metric's first point allocates its chunk (and its C stage
       storage): timed apart, so that the steady figure is what a source
       whose metrics are all active pays per point. */
    const char *call = by_handle ? "mq_metric_send" : "mq_source_send";
    int64_t t = mq_now(), start = mq_now(), cpu0 = thread_cpu_ns();
    for (int64_t m = 0; m < metrics; m++) {
        if ((rc = scale_send(src, handles, names, name_room, m, t))) die(call, rc);
    }
    int64_t first_cpu = thread_cpu_ns() - cpu0;
    cpu0 = thread_cpu_ns();
    for (int64_t i = 0; i < points; i++) {
        int64_t m = i % metrics;
        if (m == 0) t += STEP_NS;
        if ((rc = scale_send(src, handles, names, name_room, m, t))) die(call, rc);
    }
    int64_t cpu = thread_cpu_ns() - cpu0, sent = mq_now();
    long rss_sent = status_kb("VmRSS");
    finish(src);
    printf("{\"start_ns\": %" PRId64 ", \"sent_ns\": %" PRId64 ", \"points\": %" PRId64 ", \"metrics\": %" PRId64
           ", \"declare_ns\": %" PRId64 ", \"first_cpu_ns_per_point\": %.1f, \"cpu_ns_per_point\": %.1f"
           ", \"rss_connected_kb\": %ld, \"rss_declared_kb\": %ld, \"rss_sent_kb\": %ld}\n",
           start, sent, points, metrics, declared - declare0, (double)first_cpu / (double)metrics,
           (double)cpu / (double)points, rss_connected, rss_declared, rss_sent);
    mq_source_free(src);
    free(handles);
    free(json);
    free(names);
    return 0;
}

int main(int argc, char **argv) {
    int rc = 2;
    if (argc >= 2) {
        if (!strcmp(argv[1], "send")) rc = mode_send(argc, argv);
        else if (!strcmp(argv[1], "batch")) rc = mode_batch(argc, argv);
        else if (!strcmp(argv[1], "latency")) rc = mode_latency(argc, argv);
        else if (!strcmp(argv[1], "startup")) rc = mode_startup(argc, argv);
        else if (!strcmp(argv[1], "rss")) rc = mode_rss(argc, argv);
        else if (!strcmp(argv[1], "scale")) rc = mode_scale(argc, argv);
    }
    if (rc == 2) {
        fprintf(stderr, "usage: see the comment at the top of bench/c/mqbench.c\n");
    }
    fflush(stdout);
    return rc;
}
