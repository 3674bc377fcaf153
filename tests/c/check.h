/* Helpers for tests/c: failure counting, timing, and the line protocol with
   the Go harness (libmetricq/capi/ctest).

   Protocol: lines on stdout that start with "@@ " are for the harness; all
   else (stderr included) is just log. Expectations about what the sink must
   receive:
     @@ point  METRIC T V        one point, in order (V as C99 %a)
     @@ seq    METRIC N T0 DT V0 DV   N points (T0+i*DT, V0+i*DV), in order
     @@ chunks METRIC exact N1,N2,...  the sizes of the messages, in order
     @@ chunks METRIC max N     every message holds 1..N points
   The harness checks that every metric named gets exactly these points,
   each once, in this order, and that no other metric gets data. Requests,
   answered with one line on stdin:
     @@ config TOKEN JSON       the manager sends a "config" RPC: "ok" or
                                "error TEXT"
     @@ discover TOKEN          the manager broadcasts discover: "ok" if TOKEN
                                answered alive ("ok version=V" if it named
                                its client version V), else "fail TEXT"
     @@ cut                     the proxy at METRICQ_TEST_PROXY_URL closes
                                every connection and refuses new ones: "ok"
   The last line is "@@ done". */
#ifndef TESTS_C_CHECK_H
#define TESTS_C_CHECK_H

#define _GNU_SOURCE
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "metricq.h"

static atomic_int failures;

#define FAIL(...)                                                                   \
    do {                                                                            \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                        \
        fprintf(stderr, __VA_ARGS__);                                               \
        fprintf(stderr, "\n");                                                      \
        atomic_fetch_add(&failures, 1);                                             \
    } while (0)

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) FAIL("%s (last error: %s)", #cond, mq_last_error());           \
    } while (0)

#define CHECK_MSG(cond, ...)                                                        \
    do {                                                                            \
        if (!(cond)) FAIL(__VA_ARGS__);                                             \
    } while (0)

/* Runs call, which returns a status, and checks it equals want. */
#define EXPECT(want, call)                                                          \
    do {                                                                            \
        int got_ = (call);                                                          \
        if (got_ != (want))                                                         \
            FAIL("%s = %d (%s), want %d (%s); last error: %s", #call, got_,         \
                 mq_strerror(got_), (want), mq_strerror(want), mq_last_error());    \
    } while (0)

/* A status check that also wants a word in mq_last_error(). */
#define EXPECT_ERR(want, word, call)                                                \
    do {                                                                            \
        int got_ = (call);                                                          \
        if (got_ != (want))                                                         \
            FAIL("%s = %d (%s), want %d (%s); last error: %s", #call, got_,         \
                 mq_strerror(got_), (want), mq_strerror(want), mq_last_error());    \
        else if (!strstr(mq_last_error(), (word)))                                  \
            FAIL("%s: last error \"%s\" lacks \"%s\"", #call, mq_last_error(),      \
                 (word));                                                           \
    } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static pthread_mutex_t ctl_mu = PTHREAD_MUTEX_INITIALIZER;

static void ctl(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&ctl_mu);
    fputs("@@ ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&ctl_mu);
    va_end(ap);
}

/* Sends a request and returns the harness's answer (static buffer). */
static const char *ctl_request(const char *fmt, ...) {
    static char line[8192];
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&ctl_mu);
    fputs("@@ ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) {
        strcpy(line, "eof");
    }
    line[strcspn(line, "\n")] = '\0';
    pthread_mutex_unlock(&ctl_mu);
    va_end(ap);
    return line;
}

static void expect_point(const char *metric, int64_t t, double v) {
    ctl("point %s %" PRId64 " %a", metric, t, v);
}

static void expect_seq(const char *metric, long n, int64_t t0, int64_t dt, double v0, double dv) {
    ctl("seq %s %ld %" PRId64 " %" PRId64 " %a %a", metric, n, t0, dt, v0, dv);
}

static void expect_chunks(const char *metric, const char *spec) {
    ctl("chunks %s %s", metric, spec);
}

#endif
