/* The C test of libmetricq: every function and every rule of C-API.md,
   against a real RabbitMQ broker and the local manager that the harness
   (libmetricq/capi/ctest) starts. The harness also runs a sink and checks the data
   this program says to expect (see check.h). Exit status 0 = all passed.

   Environment (set by the harness):
     METRICQ_TEST_URL                the broker URL, manager running
     METRICQ_TEST_REFUSED_URL        a port nobody listens on
     METRICQ_TEST_BADPW_URL          the broker, with a wrong password
     METRICQ_TEST_SILENT_TCP_URL     accepts TCP, never speaks AMQP
     METRICQ_TEST_SILENT_MANAGER_URL a vhost with the MetricQ exchanges but no
                                     manager answering
   The passwords in these URLs contain "s3cret"; none may ever appear in
   mq_last_error() or in a log line. */
#include "check.h"

#include <float.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

static const char *url;

/* Scheduling slack allowed for something due at once, in seconds: the tests may
   run beside others on a loaded machine. */
#define SLACK 0.4

/* How much later than its timeout a blocking call may return, in seconds.
   Timers fire late on a loaded 2-core machine (0.6 s seen); a call that
   ignored its timeout would instead run on for its inner timeouts (the
   RPC timeout is 60 s) or for ever. */
#define TIMEOUT_MARGIN 1.0

/* Deterministic timestamps: 2023-11-14T22:13:20Z plus offsets. */
#define T0 INT64_C(1700000000000000000)

/* ----------------------------------------------------------------------- */
/* Log capture                                                               */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char *log_text;        /* every captured line, "LEVEL message\n" */
static size_t log_len, log_cap;
static int log_echo;

static void capture_log(int level, const char *message, void *user) {
    if (user != (void *)&log_text) {
        FAIL("log handler got user %p", user);
    }
    pthread_mutex_lock(&log_mu);
    size_t need = strlen(message) + 16;
    if (log_len + need > log_cap) {
        log_cap = (log_len + need) * 2;
        log_text = realloc(log_text, log_cap);
    }
    log_len += (size_t)sprintf(log_text + log_len, "%d %s\n", level, message);
    pthread_mutex_unlock(&log_mu);
    if (log_echo) {
        fprintf(stderr, "  log %d: %s\n", level, message);
    }
}

static int log_contains(const char *word) {
    pthread_mutex_lock(&log_mu);
    int found = log_text != NULL && strstr(log_text, word) != NULL;
    pthread_mutex_unlock(&log_mu);
    return found;
}

static void log_clear(void) {
    pthread_mutex_lock(&log_mu);
    log_len = 0;
    if (log_text) log_text[0] = '\0';
    pthread_mutex_unlock(&log_mu);
}

/* ----------------------------------------------------------------------- */

static void *last_error_thread(void *arg) {
    (void)arg;
    CHECK(strcmp(mq_last_error(), "") == 0);
    EXPECT(MQ_ERR_INVALID, mq_source_flush(NULL, 1));
    CHECK(strstr(mq_last_error(), "invalid source handle") != NULL);
    return NULL;
}

static void test_basics(void) {
    fprintf(stderr, "== basics\n");
    char want[64];
    snprintf(want, sizeof want, "libmetricq/%s", MQ_VERSION_STRING);
    CHECK_MSG(strcmp(mq_version(), want) == 0, "mq_version() = %s, header says %s", mq_version(), want);
    CHECK(MQ_VERSION_NUMBER == MQ_VERSION_MAJOR * 10000 + MQ_VERSION_MINOR * 100 + MQ_VERSION_PATCH);

    for (int a = MQ_ERR_INTERNAL; a <= MQ_OK; a++) {
        const char *ta = mq_strerror(a);
        CHECK_MSG(ta != NULL && ta[0] != '\0' && strcmp(ta, "unknown status") != 0, "mq_strerror(%d)", a);
        for (int b = MQ_ERR_INTERNAL; b < a; b++) {
            CHECK_MSG(strcmp(ta, mq_strerror(b)) != 0, "mq_strerror(%d) == mq_strerror(%d)", a, b);
        }
    }
    CHECK(strcmp(mq_strerror(1), "unknown status") == 0);
    CHECK(strcmp(mq_strerror(-10), "unknown status") == 0);
    CHECK(strcmp(mq_strerror(INT_MIN), "unknown status") == 0);

    /* mq_last_error is per thread. */
    EXPECT(MQ_ERR_INVALID, mq_source_stop(NULL, NAN));
    char mine[1024];
    snprintf(mine, sizeof mine, "%s", mq_last_error());
    CHECK(mine[0] != '\0');
    pthread_t th;
    pthread_create(&th, NULL, last_error_thread, NULL);
    pthread_join(th, NULL);
    CHECK(strcmp(mq_last_error(), mine) == 0);

    /* A success leaves the last error alone. */
    EXPECT(MQ_OK, mq_set_log_level(MQ_LOG_WARN));
    CHECK(strcmp(mq_last_error(), mine) == 0);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t real = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    int64_t now = mq_now();
    CHECK_MSG(llabs(now - real) < INT64_C(1000000000), "mq_now() = %" PRId64 ", clock %" PRId64, now, real);
}

/* Every function, with NULL, forged and (later) freed handles. */
static void all_calls_invalid(mq_source *src, const char *what) {
    int64_t t = T0;
    double v = 1;
    char buf[16];
    mq_stats st;
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_connect(src, 1));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_set_max_buffered(src, 10));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_declare(src, "a.b", NULL, 1));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_declare_many(src, "[\"a.b\"]", 1));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_set_chunk_size(src, NULL, 5));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_send(src, "a.b", t, v, 1));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_send_batch(src, "a.b", &t, &v, 1, 1));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_flush(src, 1));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_config(src, buf, sizeof buf));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_stop(src, 1));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_set_config_handler(src, NULL, NULL));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_run_interval(src, 1, NULL, NULL));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_set_period(src, 1));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_stats(src, &st, sizeof st));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_set_client_version(src, "1"));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_set_reconnect_timeout(src, 1));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_set_heartbeat(src, 5));
    EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_wait(src, 1));
    mq_source_free(src); /* must not crash */
    (void)what;
}

static void test_invalid_handles(void) {
    fprintf(stderr, "== invalid handles\n");
    int local;
    all_calls_invalid(NULL, "NULL");
    all_calls_invalid((mq_source *)(uintptr_t)0x7fff12345678, "forged");
    all_calls_invalid((mq_source *)&local, "stack pointer");
    all_calls_invalid((mq_source *)(uintptr_t)-1, "all ones");
    mq_source_free(NULL); /* NULL is a no-op */
}

/* ----------------------------------------------------------------------- */

static void check_no_secret(const char *what) {
    CHECK_MSG(strstr(mq_last_error(), "s3cret") == NULL, "%s: password in last error: %s", what, mq_last_error());
    CHECK_MSG(!log_contains("s3cret"), "%s: password in a log line", what);
}

/* mq_source_new must fail within timeout (plus scheduling slack). */
static void connect_fails(const char *env, double timeout, const char *word) {
    const char *u = getenv(env);
    if (u == NULL || u[0] == '\0') {
        FAIL("%s not set", env);
        return;
    }
    double start = now_s();
    mq_source *src = mq_source_new(u, "ctest-failing", timeout);
    double took = now_s() - start;
    fprintf(stderr, "  %s: %.3f s: %s\n", env, took, mq_last_error());
    CHECK_MSG(src == NULL, "%s: connected", env);
    CHECK_MSG(took <= timeout + TIMEOUT_MARGIN, "%s: took %.3f s, timeout %.3f s", env, took, timeout);
    /* word may list alternatives: "a|b" */
    char words[128];
    snprintf(words, sizeof words, "%s", word);
    int found = 0;
    for (char *w = strtok(words, "|"); w != NULL; w = strtok(NULL, "|")) {
        found |= strstr(mq_last_error(), w) != NULL;
    }
    CHECK_MSG(found, "%s: last error \"%s\" lacks \"%s\"", env, mq_last_error(), word);
    check_no_secret(env);
    mq_source_free(src);
}

static void test_connect_failures(void) {
    fprintf(stderr, "== connect failures\n");
    /* Bad arguments. */
    CHECK(mq_source_new(NULL, "ctest-x", 5) == NULL);
    CHECK(strstr(mq_last_error(), "url is NULL") != NULL);
    CHECK(mq_source_new(url, NULL, 5) == NULL);
    CHECK(strstr(mq_last_error(), "token is NULL") != NULL);
    const double bad_timeouts[] = {0, -1, -0.0, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad_timeouts / sizeof *bad_timeouts; i++) {
        CHECK_MSG(mq_source_new(url, "ctest-x", bad_timeouts[i]) == NULL, "timeout %g accepted", bad_timeouts[i]);
        CHECK(strstr(mq_last_error(), "timeout") != NULL);
    }
    CHECK(mq_source_new("http://127.0.0.1/", "ctest-x", 5) == NULL);
    CHECK(strstr(mq_last_error(), "invalid argument") != NULL);
    CHECK(mq_source_new("amqp://guest:pw-s3cret@127.0.0.1:5672/\xff", "ctest-x", 5) == NULL);
    CHECK(strstr(mq_last_error(), "UTF-8") != NULL);
    check_no_secret("bad UTF-8 URL");
    CHECK(mq_source_new("amqp://guest:pw-s3cret@[::1/", "ctest-x", 5) == NULL);
    check_no_secret("unparsable URL");
    CHECK(mq_source_new(url, "ctest-\xc3\x28", 5) == NULL);
    CHECK(strstr(mq_last_error(), "UTF-8") != NULL);
    CHECK(mq_source_new(url, "", 5) == NULL);
    CHECK(strstr(mq_last_error(), "empty token") != NULL);
    CHECK(mq_source_create(NULL, "ctest-x") == NULL);
    CHECK(mq_source_create(url, "\xff") == NULL);

    /* Real failures: each within its timeout, with a reason, no password. */
    connect_fails("METRICQ_TEST_REFUSED_URL", 5, "refused");
    connect_fails("METRICQ_TEST_BADPW_URL", 5, "connection failed");
    /* The dial's or the register call's own error usually comes first; on
       a loaded machine the caller's timer may win. */
    connect_fails("METRICQ_TEST_SILENT_TCP_URL", 1.0, "management connection|not ready within");
    connect_fails("METRICQ_TEST_SILENT_MANAGER_URL", 1.5, "source.register|not ready within");
    CHECK(strstr(mq_last_error(), "guest") == NULL); /* that URL's password is "guest" */

    /* Two steps: a failed connect may be retried; stop makes it final. */
    mq_source *src = mq_source_create(getenv("METRICQ_TEST_REFUSED_URL"), "ctest-retry");
    CHECK(src != NULL);
    EXPECT(MQ_ERR_INVALID, mq_source_connect(src, 0));
    EXPECT(MQ_ERR_CONNECT, mq_source_connect(src, 5));
    check_no_secret("connect");
    EXPECT(MQ_ERR_CONNECT, mq_source_connect(src, 5));
    mq_stats st;
    memset(&st, 0xff, sizeof st);
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK(st.points_accepted == 0 && st.buffered_points == 0);
    EXPECT(MQ_OK, mq_source_stop(src, 5));
    EXPECT(MQ_ERR_STOPPED, mq_source_connect(src, 5));
    mq_source_free(src);

    /* A connect that times out leaves the source unconnected. */
    src = mq_source_create(getenv("METRICQ_TEST_SILENT_MANAGER_URL"), "ctest-timeout");
    double start = now_s();
    EXPECT(MQ_ERR_TIMEOUT, mq_source_connect(src, 0.5));
    CHECK_MSG(now_s() - start <= 0.5 + TIMEOUT_MARGIN, "connect took %.3f s", now_s() - start);
    EXPECT(MQ_ERR_INVALID, mq_source_send(src, "a.b", T0, 1, 1));
    CHECK(strstr(mq_last_error(), "not connected") != NULL);
    mq_source_free(src);
    all_calls_invalid(src, "freed after timeout");
}

/* ----------------------------------------------------------------------- */
/* One source, every rule, exact data.                                        */

static void send_ok(mq_source *src, const char *metric, int64_t t, double v) {
    int rc = mq_source_send(src, metric, t, v, 5);
    if (rc != MQ_OK) {
        FAIL("send %s %" PRId64 " = %d: %s", metric, t, rc, mq_last_error());
        return;
    }
    expect_point(metric, t, v);
}

/* Waits (up to timeout s) until the broker has confirmed `chunks` chunks
   of src; returns whether it did. */
static int wait_chunks_confirmed(mq_source *src, uint64_t chunks, double timeout) {
    double deadline = now_s() + timeout;
    mq_stats st;
    do {
        if (mq_source_stats(src, &st, sizeof st) != MQ_OK) return 0;
        if (st.chunks_confirmed >= chunks) return 1;
        sched_yield();
    } while (now_s() < deadline);
    return 0;
}

static int stage_then_stop(mq_source *src, void *user) {
    (void)user;
    for (int i = 0; i < 4; i++) {
        send_ok(src, "ctest.stage.self", T0 + i, i);
    }
    return 7;
}

/* Points of mq_source_send wait in C (stage.c) and cross into Go a batch
   at a time. None of that may show: chunks close at the point that fills
   them, the order rule sees staged points, and every call that must
   publish or count them does. */
static void test_staging(void) {
    fprintf(stderr, "== staging\n");
    mq_source *src = mq_source_new(url, "ctest-stage", 30);
    CHECK(src != NULL);
    if (src == NULL) return;
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 1000));
    EXPECT(MQ_OK, mq_source_declare_many(src, "[\"ctest.stage.big\", \"ctest.stage.shrink\", \"ctest.stage.stop\"]", 10));

    /* 1000 points per chunk, more than a stage holds: the 1000th point
       closes the chunk, with no flush and no further send. */
    for (int i = 0; i < 999; i++) {
        send_ok(src, "ctest.stage.big", T0 + i, i);
    }
    mq_stats st;
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK_MSG(st.points_accepted == 999 && st.chunks_published == 0,
              "999 sent: accepted %" PRIu64 ", chunks published %" PRIu64, st.points_accepted, st.chunks_published);
    send_ok(src, "ctest.stage.big", T0 + 999, 999);
    CHECK_MSG(wait_chunks_confirmed(src, 1, 10), "the 1000th point did not close the chunk");

    /* The order rule holds against staged points. */
    send_ok(src, "ctest.stage.big", T0 + 1000, 1000);
    EXPECT_ERR(MQ_ERR_ORDER, "not after", mq_source_send(src, "ctest.stage.big", T0 + 1000, 1, 5));
    EXPECT_ERR(MQ_ERR_ORDER, "not after", mq_source_send(src, "ctest.stage.big", T0 + 999, 1, 5));
    int64_t times[1500];
    double values[1500];
    for (int i = 0; i < 1500; i++) {
        times[i] = T0 + 1000 + i;
        values[i] = i;
    }
    EXPECT_ERR(MQ_ERR_ORDER, "not after", mq_source_send_batch(src, "ctest.stage.big", times, values, 1500, 5));
    /* A batch after a staged point: the staged point goes first. */
    for (int i = 0; i < 1500; i++) {
        times[i] = T0 + 1001 + i;
    }
    EXPECT(MQ_OK, mq_source_send_batch(src, "ctest.stage.big", times, values, 1500, 5));
    expect_seq("ctest.stage.big", 1500, T0 + 1001, 1, 0, 1);
    send_ok(src, "ctest.stage.big", T0 + 3000, 3000);
    expect_chunks("ctest.stage.big", "exact 1000,1000,502");

    /* A smaller chunk size publishes what is staged at once. */
    for (int i = 0; i < 5; i++) {
        send_ok(src, "ctest.stage.shrink", T0 + i, i);
    }
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, "ctest.stage.shrink", 2));
    CHECK_MSG(wait_chunks_confirmed(src, st.chunks_confirmed + 1, 10), "staged points were not published");
    send_ok(src, "ctest.stage.shrink", T0 + 5, 5);
    send_ok(src, "ctest.stage.shrink", T0 + 6, 6);
    expect_chunks("ctest.stage.shrink", "exact 5,2");

    /* Stopping publishes staged points, and the counters add up. */
    for (int i = 0; i < 7; i++) {
        send_ok(src, "ctest.stage.stop", T0 + i, i);
    }
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK_MSG(st.points_accepted == 2516, "accepted %" PRIu64 ", want 2516", st.points_accepted);
    EXPECT(MQ_OK, mq_source_stop(src, 10));
    expect_chunks("ctest.stage.stop", "exact 7");
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK_MSG(st.points_accepted == 2516 && st.points_confirmed == 2516 && st.points_dropped == 0,
              "after stop: accepted %" PRIu64 ", confirmed %" PRIu64 ", dropped %" PRIu64, st.points_accepted,
              st.points_confirmed, st.points_dropped);
    EXPECT(MQ_ERR_STOPPED, mq_source_send(src, "ctest.stage.stop", T0 + 100, 1, 5));
    mq_source_free(src);

    /* So does a source that stops on its own: here its update function
       sends, then asks to stop. */
    src = mq_source_new(url, "ctest-stage-self", 30);
    CHECK(src != NULL);
    if (src == NULL) return;
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 1000));
    EXPECT(MQ_OK, mq_source_declare(src, "ctest.stage.self", NULL, 10));
    EXPECT_ERR(MQ_ERR_STOPPED, "update returned", mq_source_run_interval(src, 10, stage_then_stop, NULL));
    EXPECT(MQ_ERR_STOPPED, mq_source_send(src, "ctest.stage.self", T0 + 100, 1, 5));
    expect_chunks("ctest.stage.self", "exact 4");
    mq_source_free(src);

    /* Space reserved for staging but not used by any point goes to
       whoever needs it: with a bound of 640, "a" stages one point (and
       reserves 10, 1/64 of the bound), "b" fills the rest, yet "b" then
       gets the 9 points "a" does not use, and no more. */
    src = mq_source_create(url, "ctest-stage-reclaim");
    CHECK(src != NULL);
    if (src == NULL) return;
    EXPECT(MQ_OK, mq_source_set_max_buffered(src, 640));
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 0));
    EXPECT(MQ_OK, mq_source_connect(src, 30));
    EXPECT(MQ_OK, mq_source_declare_many(src, "[\"ctest.stage.a\", \"ctest.stage.b\"]", 10));
    send_ok(src, "ctest.stage.a", T0, 1);
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK_MSG(st.buffered_points == 10, "space reserved by the stage: %" PRIu64 ", want 10", st.buffered_points);
    /* A batch no buffer of this source holds is refused, and leaves no
       space reserved behind. */
    for (int i = 0; i < 700; i++) {
        times[i] = T0 + 1 + i;
        values[i] = i;
    }
    EXPECT_ERR(MQ_ERR_INVALID, "exceed", mq_source_send_batch(src, "ctest.stage.a", times, values, 700, 1));
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK_MSG(st.buffered_points == 1, "after a refused batch: %" PRIu64 " buffered, want the 1 point", st.buffered_points);
    for (int i = 0; i < 630; i++) {
        times[i] = T0 + i;
        values[i] = i;
    }
    EXPECT(MQ_OK, mq_source_send_batch(src, "ctest.stage.b", times, values, 630, 5));
    for (int i = 630; i < 639; i++) {
        int rc = mq_source_send(src, "ctest.stage.b", T0 + i, i, 0.2);
        CHECK_MSG(rc == MQ_OK, "send %d to b: %d (%s)", i, rc, mq_last_error());
    }
    expect_seq("ctest.stage.b", 639, T0, 1, 0, 1);
    EXPECT_ERR(MQ_ERR_TIMEOUT, "buffer full", mq_source_send(src, "ctest.stage.b", T0 + 639, 639, 0.05));
    EXPECT(MQ_OK, mq_source_stop(src, 10));
    expect_chunks("ctest.stage.a", "exact 1");
    expect_chunks("ctest.stage.b", "exact 639");
    mq_source_free(src);

    /* After a connect that timed out (and was undone), the connect that
       succeeds opens the stage (space reserved ahead shows in
       buffered_points) and the stop publishes what was staged. */
    src = mq_source_create(url, "ctest-stage-retry");
    CHECK(src != NULL);
    if (src == NULL) return;
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 1000));
    int rc = mq_source_connect(src, 0.001);
    CHECK_MSG(rc == MQ_ERR_TIMEOUT || rc == MQ_ERR_CONNECT, "connect within 1 ms: %d", rc);
    EXPECT(MQ_OK, mq_source_connect(src, 30));
    EXPECT(MQ_OK, mq_source_declare(src, "ctest.stage.retry", NULL, 10));
    send_ok(src, "ctest.stage.retry", T0, 1);
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK_MSG(st.points_accepted == 1 && st.buffered_points > 1, "after a retried connect: accepted %" PRIu64
              ", buffered %" PRIu64 " (not staging?)", st.points_accepted, st.buffered_points);
    send_ok(src, "ctest.stage.retry", T0 + 1, 2);
    EXPECT(MQ_OK, mq_source_stop(src, 10));
    expect_chunks("ctest.stage.retry", "exact 2");
    mq_source_free(src);

    /* So does freeing without a stop. */
    src = mq_source_new(url, "ctest-stage-free", 30);
    CHECK(src != NULL);
    if (src == NULL) return;
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 1000));
    EXPECT(MQ_OK, mq_source_declare(src, "ctest.stage.free", NULL, 10));
    for (int i = 0; i < 3; i++) {
        send_ok(src, "ctest.stage.free", T0 + i, i);
    }
    mq_source_free(src);
    expect_chunks("ctest.stage.free", "exact 3");
}

static void test_source(void) {
    fprintf(stderr, "== source rules and data\n");
    mq_source *src = mq_source_new(url, "ctest-main", 30);
    if (src == NULL) {
        FAIL("mq_source_new: %s", mq_last_error());
        return;
    }
    EXPECT_ERR(MQ_ERR_INVALID, "already connected", mq_source_connect(src, 5));
    EXPECT(MQ_ERR_INVALID, mq_source_set_max_buffered(src, 100));

    /* mq_source_config, snprintf-style. */
    int n = mq_source_config(src, NULL, 0);
    CHECK(n > 2);
    char *full = malloc((size_t)n + 1);
    EXPECT(n, mq_source_config(src, full, (size_t)n + 1));
    CHECK(strlen(full) == (size_t)n && full[0] == '{' && full[n - 1] == '}');
    CHECK_MSG(strstr(full, "\"_id\":\"ctest-main\"") != NULL, "config: %s", full);
    char small[8];
    memset(small, 'Z', sizeof small);
    EXPECT(n, mq_source_config(src, small, 5));
    CHECK(memcmp(small, full, 4) == 0 && small[4] == '\0' && small[5] == 'Z');
    EXPECT(n, mq_source_config(src, small, 1));
    CHECK(small[0] == '\0' && small[1] == full[1]);
    EXPECT(MQ_ERR_INVALID, mq_source_config(src, NULL, 5));
    free(full);

    /* Declaring: bad names, bad JSON, bad timeouts. */
    char long_name[300];
    memset(long_name, 'a', sizeof long_name);
    long_name[256] = '\0'; /* 256 bytes: one too many */
    const char *bad_names[] = {"", "_ctest.x", "ctest.a*b", "ctest.a#b", long_name, "ctest.\xc3\x28", "ctest.\xff"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        EXPECT_ERR(MQ_ERR_INVALID, "bad metric name", mq_source_declare(src, bad_names[i], NULL, 5));
        EXPECT_ERR(MQ_ERR_INVALID, "bad metric name", mq_source_send(src, bad_names[i], T0, 1, 5));
        EXPECT_ERR(MQ_ERR_INVALID, "bad metric name", mq_source_set_chunk_size(src, bad_names[i], 5));
        int64_t t = T0;
        double v = 0;
        EXPECT_ERR(MQ_ERR_INVALID, "bad metric name", mq_source_send_batch(src, bad_names[i], &t, &v, 1, 5));
    }
    long_name[256] = 'a';
    long_name[299] = '\0'; /* no NUL in the first 256 bytes */
    EXPECT_ERR(MQ_ERR_INVALID, "bad metric name", mq_source_send(src, long_name, T0, 1, 5));
    EXPECT_ERR(MQ_ERR_INVALID, "NULL", mq_source_declare(src, NULL, NULL, 5));
    EXPECT_ERR(MQ_ERR_INVALID, "NULL", mq_source_send(src, NULL, T0, 1, 5));
    const char *bad_json[] = {"{", "[1]", "\"x\"", "nul", "{\"a\":1} x", "{\"a\":\"\xff\"}", "", "  "};
    for (size_t i = 0; i < sizeof bad_json / sizeof *bad_json; i++) {
        EXPECT_ERR(MQ_ERR_INVALID, "metadata", mq_source_declare(src, "ctest.bad", bad_json[i], 5));
    }
    const double bad_timeouts[] = {0, -1, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad_timeouts / sizeof *bad_timeouts; i++) {
        double bt = bad_timeouts[i];
        int64_t t = T0;
        double v = 0;
        EXPECT_ERR(MQ_ERR_INVALID, "timeout", mq_source_declare(src, "ctest.bad", NULL, bt));
        EXPECT_ERR(MQ_ERR_INVALID, "timeout", mq_source_declare_many(src, "[]", bt));
        EXPECT_ERR(MQ_ERR_INVALID, "timeout", mq_source_send(src, "ctest.bad", T0, 1, bt));
        EXPECT_ERR(MQ_ERR_INVALID, "timeout", mq_source_send_batch(src, "ctest.bad", &t, &v, 1, bt));
        EXPECT_ERR(MQ_ERR_INVALID, "timeout", mq_source_flush(src, bt));
        EXPECT_ERR(MQ_ERR_INVALID, "timeout", mq_source_stop(src, bt));
    }
    const char *bad_sets[] = {NULL, "42", "null", "[1]", "[\"ok.name\", 2]", "{\"ctest.m\": 5}",
                              "{\"ctest.m\": [1]}", "{\"_bad\": {}}", "[\"a*b\"]", "{\"a\":{}} {}",
                              "[\"\xff\"]"};
    for (size_t i = 0; i < sizeof bad_sets / sizeof *bad_sets; i++) {
        EXPECT(MQ_ERR_INVALID, mq_source_declare_many(src, bad_sets[i], 5));
    }

    /* Chunk sizes. */
    EXPECT_ERR(MQ_ERR_INVALID, "chunk size", mq_source_set_chunk_size(src, NULL, -1));
    EXPECT_ERR(MQ_ERR_INVALID, "chunk size", mq_source_set_chunk_size(src, "ctest.exact.chunk3", -5));
    EXPECT_ERR(MQ_ERR_INVALID, "buffer", mq_source_set_chunk_size(src, NULL, INT64_C(1) << 40));
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, "ctest.exact.chunk3", 3));
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, "ctest.exact.manual", 0));
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, "ctest.exact.batch", 4));

    /* Sending before declaring. */
    int64_t t1 = T0;
    double v1 = 1;
    EXPECT_ERR(MQ_ERR_UNDECLARED, "not declared", mq_source_send(src, "ctest.exact.chunk3", T0, 1, 5));
    EXPECT_ERR(MQ_ERR_UNDECLARED, "not declared", mq_source_send_batch(src, "ctest.exact.chunk3", &t1, &v1, 1, 5));
    EXPECT_ERR(MQ_ERR_UNDECLARED, "not declared", mq_source_send(src, "ctest.never", T0, 1, 5));

    EXPECT(MQ_OK, mq_source_declare(src, "ctest.exact.chunk3", "{\"unit\":\"K\",\"rate\":10,\"description\":\"three per chunk\"}", 10));
    EXPECT(MQ_OK, mq_source_declare(src, "ctest.exact.manual", NULL, 10));
    EXPECT(MQ_OK, mq_source_declare_many(src, "{\"ctest.exact.batch\": {\"unit\": \"s\"}, \"ctest.exact.default\": null}", 10));
    EXPECT(MQ_OK, mq_source_declare_many(src, "[]", 10));
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 2)); /* for metrics declared from now on */
    EXPECT(MQ_OK, mq_source_declare_many(src, "[\"ctest.exact.default2\", \"ctest.exact.order\"]", 10));
    memset(long_name, 'n', sizeof long_name);
    memcpy(long_name, "ctest.", 6);
    long_name[255] = '\0'; /* exactly 255 bytes: allowed */
    EXPECT(MQ_OK, mq_source_declare(src, long_name, "{}", 10));
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, long_name, 1));

    /* manual: 5 points, flush (which seals every metric: so this comes
       first), 2 more; stop delivers those. */
    for (int i = 0; i < 5; i++) {
        send_ok(src, "ctest.exact.manual", T0 + i, i * 0.5);
    }
    EXPECT(MQ_OK, mq_source_flush(src, 10));
    mq_stats st;
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK_MSG(st.points_confirmed == st.points_accepted && st.points_accepted == 5,
              "after flush: accepted %" PRIu64 ", confirmed %" PRIu64, st.points_accepted, st.points_confirmed);
    CHECK(st.buffered_points == 0);
    CHECK(st.chunks_confirmed == 1 && st.chunks_published >= 1 && st.bytes_published > 0);
    send_ok(src, "ctest.exact.manual", T0 + 5, 5);
    send_ok(src, "ctest.exact.manual", T0 + 6, 6);
    expect_chunks("ctest.exact.manual", "exact 5,2");

    /* chunk size 3: 7 points go out as 3, 3 and (on stop) 1. Special values
       must come through bit for bit. */
    const double specials[] = {0.0, -0.0, 1.5, -1e-310, DBL_MAX, -INFINITY, INFINITY};
    for (int i = 0; i < 7; i++) {
        send_ok(src, "ctest.exact.chunk3", T0 + i * 1000, specials[i]);
    }
    expect_chunks("ctest.exact.chunk3", "exact 3,3,1");

    /* default (1): one chunk per point. */
    for (int i = 0; i < 4; i++) {
        send_ok(src, "ctest.exact.default", T0 + i, 100 + i);
    }
    expect_chunks("ctest.exact.default", "exact 1,1,1,1");

    /* default changed to 2 before declaring: 5 points = 2, 2, 1. */
    for (int i = 0; i < 5; i++) {
        send_ok(src, "ctest.exact.default2", T0 + i, -i);
    }
    expect_chunks("ctest.exact.default2", "exact 2,2,1");

    /* Order: equal and smaller timestamps are refused, nothing buffered; the
       next good one is accepted once. */
    send_ok(src, "ctest.exact.order", T0 + 100, 1);
    EXPECT_ERR(MQ_ERR_ORDER, "not strictly increasing", mq_source_send(src, "ctest.exact.order", T0 + 100, 2, 5));
    EXPECT_ERR(MQ_ERR_ORDER, "not strictly increasing", mq_source_send(src, "ctest.exact.order", T0 + 99, 3, 5));
    EXPECT_ERR(MQ_ERR_ORDER, "not strictly increasing", mq_source_send(src, "ctest.exact.order", INT64_MIN, 3, 5));
    send_ok(src, "ctest.exact.order", T0 + 101, 4);
    expect_chunks("ctest.exact.order", "exact 2");

    /* Batches: all or none. */
    int64_t times[10];
    double values[10];
    for (int i = 0; i < 10; i++) {
        times[i] = T0 + 10 * i;
        values[i] = i * i;
    }
    EXPECT(MQ_OK, mq_source_send_batch(src, "ctest.exact.batch", NULL, NULL, 0, 5));
    EXPECT(MQ_OK, mq_source_send_batch(src, "ctest.exact.batch", times, values, 0, 5));
    EXPECT_ERR(MQ_ERR_INVALID, "NULL", mq_source_send_batch(src, "ctest.exact.batch", NULL, values, 3, 5));
    EXPECT_ERR(MQ_ERR_INVALID, "NULL", mq_source_send_batch(src, "ctest.exact.batch", times, NULL, 3, 5));
    EXPECT_ERR(MQ_ERR_INVALID, "too large", mq_source_send_batch(src, "ctest.exact.batch", times, values, SIZE_MAX, 5));
    int64_t unordered[3] = {T0 + 1, T0 + 3, T0 + 2};
    EXPECT_ERR(MQ_ERR_ORDER, "not after the one before", mq_source_send_batch(src, "ctest.exact.batch", unordered, values, 3, 5));
    int64_t dup[2] = {T0 + 1, T0 + 1};
    EXPECT(MQ_ERR_ORDER, mq_source_send_batch(src, "ctest.exact.batch", dup, values, 2, 5));
    EXPECT(MQ_OK, mq_source_send_batch(src, "ctest.exact.batch", times, values, 10, 5));
    for (int i = 0; i < 10; i++) {
        expect_point("ctest.exact.batch", times[i], values[i]);
    }
    EXPECT(MQ_ERR_ORDER, mq_source_send_batch(src, "ctest.exact.batch", times + 9, values, 1, 5));
    expect_chunks("ctest.exact.batch", "exact 4,4,2");

    send_ok(src, long_name, T0, 255);
    expect_chunks(long_name, "exact 1");

    /* Statistics: partial copies for older callers. */
    uint64_t part[3] = {7, 7, 7};
    EXPECT(MQ_OK, mq_source_stats(src, (mq_stats *)part, sizeof(uint64_t)));
    /* accepted so far: manual 7, chunk3 7, default 4, default2 5, order 2,
       batch 10, long name 1 */
    CHECK_MSG(part[0] == 36 && part[1] == 7, "partial stats: %" PRIu64 ", %" PRIu64, part[0], part[1]);
    EXPECT(MQ_ERR_INVALID, mq_source_stats(src, NULL, sizeof st));
    EXPECT(MQ_OK, mq_source_stats(src, &st, 0));

    /* The manager can discover the source. */
    const char *answer = ctl_request("discover ctest-main");
    CHECK_MSG(strcmp(answer, "ok") == 0, "discover: %s", answer);

    /* Stop: idempotent; afterwards every call is MQ_ERR_STOPPED. */
    EXPECT(MQ_OK, mq_source_stop(src, 30));
    EXPECT(MQ_OK, mq_source_stop(src, 30));
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK_MSG(st.points_confirmed == st.points_accepted && st.points_accepted == 36,
              "after stop: accepted %" PRIu64 ", confirmed %" PRIu64, st.points_accepted, st.points_confirmed);
    char buf[64];
    EXPECT(MQ_ERR_STOPPED, mq_source_declare(src, "ctest.late", NULL, 5));
    EXPECT(MQ_ERR_STOPPED, mq_source_declare_many(src, "[\"ctest.late\"]", 5));
    EXPECT(MQ_ERR_STOPPED, mq_source_set_chunk_size(src, NULL, 5));
    EXPECT(MQ_ERR_STOPPED, mq_source_set_chunk_size(src, "ctest.exact.chunk3", 5));
    EXPECT(MQ_ERR_STOPPED, mq_source_send(src, "ctest.exact.chunk3", T0 + 100000, 1, 5));
    EXPECT(MQ_ERR_STOPPED, mq_source_send(src, "ctest.late", T0, 1, 5));
    EXPECT(MQ_ERR_STOPPED, mq_source_send_batch(src, "ctest.exact.batch", times, values, 1, 5));
    EXPECT(MQ_ERR_STOPPED, mq_source_flush(src, 5));
    EXPECT(MQ_ERR_STOPPED, mq_source_config(src, buf, sizeof buf));
    EXPECT(MQ_ERR_STOPPED, mq_source_connect(src, 5));
    EXPECT(MQ_ERR_STOPPED, mq_source_set_period(src, 1));
    EXPECT(MQ_ERR_STOPPED, mq_source_run_interval(src, 1, (mq_update_fn)1, NULL));

    /* Free: afterwards every call is MQ_ERR_INVALID; a second free is harmless. */
    mq_source_free(src);
    all_calls_invalid(src, "freed");
    mq_source_free(src);
}

/* ----------------------------------------------------------------------- */
/* Threads: own metrics and one shared metric.                               */

enum { THREADS = 4, OWN_POINTS = 3000, BATCH_POINTS = 2100, SHARED_POINTS = 1500 };

struct shared_point {
    int64_t t;
    double v;
};

struct worker {
    mq_source *src;
    int id;
    char own[64], own_batch[64];
    struct shared_point accepted[SHARED_POINTS];
    int order_errors;
};

static atomic_llong shared_clock;
static atomic_int workers_running;

static void *worker_main(void *arg) {
    struct worker *w = arg;
    int shared_sent = 0;
    for (int k = 0; k < OWN_POINTS; k++) {
        int rc = mq_source_send(w->src, w->own, T0 + k, k, 10);
        CHECK_MSG(rc == MQ_OK, "thread %d own %d: %d %s", w->id, k, rc, mq_last_error());
        if (k % 10 == 0 && k / 10 * 7 < BATCH_POINTS) {
            int64_t times[7];
            double values[7];
            for (int i = 0; i < 7; i++) {
                times[i] = T0 + (k / 10 * 7 + i) * 3;
                values[i] = k / 10 * 7 + i;
            }
            rc = mq_source_send_batch(w->src, w->own_batch, times, values, 7, 10);
            CHECK_MSG(rc == MQ_OK, "thread %d batch: %d %s", w->id, rc, mq_last_error());
        }
        if (k % 2 == 0 && shared_sent < SHARED_POINTS) {
            double v = w->id * 1e6 + shared_sent;
            for (int attempt = 0;; attempt++) {
                int64_t t = T0 + atomic_fetch_add(&shared_clock, 1);
                if ((shared_sent + attempt) % 4 == 0) {
                    sched_yield(); /* let another thread overtake: MQ_ERR_ORDER */
                }
                rc = mq_source_send(w->src, "ctest.threads.shared", t, v, 10);
                if (rc == MQ_OK) {
                    w->accepted[shared_sent].t = t;
                    w->accepted[shared_sent].v = v;
                    shared_sent++;
                    break;
                }
                if (rc != MQ_ERR_ORDER) {
                    FAIL("thread %d shared: %d %s", w->id, rc, mq_last_error());
                    return NULL;
                }
                w->order_errors++;
            }
        }
    }
    CHECK(shared_sent == SHARED_POINTS);
    atomic_fetch_sub(&workers_running, 1);
    return NULL;
}

static void *monitor_main(void *arg) {
    mq_source *src = arg;
    char buf[256];
    while (atomic_load(&workers_running) > 0) {
        mq_stats st;
        EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
        CHECK(mq_source_config(src, buf, sizeof buf) > 0);
        EXPECT(MQ_OK, mq_source_flush(src, 30));
        sleep_s(0.005);
    }
    return NULL;
}

static int by_time(const void *a, const void *b) {
    const struct shared_point *x = a, *y = b;
    return (x->t > y->t) - (x->t < y->t);
}

static void test_threads(void) {
    fprintf(stderr, "== threads\n");
    mq_source *src = mq_source_new(url, "ctest-threads", 30);
    if (src == NULL) {
        FAIL("mq_source_new: %s", mq_last_error());
        return;
    }
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 10));
    static struct worker workers[THREADS];
    char names[2048] = "[\"ctest.threads.shared\"";
    for (int i = 0; i < THREADS; i++) {
        workers[i].src = src;
        workers[i].id = i;
        snprintf(workers[i].own, sizeof workers[i].own, "ctest.threads.own%d", i);
        snprintf(workers[i].own_batch, sizeof workers[i].own_batch, "ctest.threads.batch%d", i);
        snprintf(names + strlen(names), sizeof names - strlen(names), ", \"%s\", \"%s\"", workers[i].own, workers[i].own_batch);
    }
    strcat(names, "]");
    EXPECT(MQ_OK, mq_source_declare_many(src, names, 30));
    atomic_store(&workers_running, THREADS);
    pthread_t th[THREADS], mon;
    double start = now_s();
    for (int i = 0; i < THREADS; i++) {
        pthread_create(&th[i], NULL, worker_main, &workers[i]);
    }
    pthread_create(&mon, NULL, monitor_main, src);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    pthread_join(mon, NULL);
    fprintf(stderr, "  %d threads: %.3f s\n", THREADS, now_s() - start);
    EXPECT(MQ_OK, mq_source_flush(src, 30));
    EXPECT(MQ_OK, mq_source_stop(src, 30));
    mq_source_free(src);

    static struct shared_point all[THREADS * SHARED_POINTS];
    int n = 0, order_errors = 0;
    for (int i = 0; i < THREADS; i++) {
        expect_seq(workers[i].own, OWN_POINTS, T0, 1, 0, 1);
        expect_chunks(workers[i].own, "max 10");
        expect_seq(workers[i].own_batch, BATCH_POINTS, T0, 3, 0, 1);
        expect_chunks(workers[i].own_batch, "max 10");
        memcpy(all + n, workers[i].accepted, sizeof workers[i].accepted);
        n += SHARED_POINTS;
        order_errors += workers[i].order_errors;
    }
    fprintf(stderr, "  shared metric: %d points accepted, %d MQ_ERR_ORDER retries\n", n, order_errors);
    qsort(all, (size_t)n, sizeof *all, by_time);
    for (int i = 0; i < n; i++) {
        CHECK_MSG(i == 0 || all[i].t > all[i - 1].t, "shared: timestamp %" PRId64 " accepted twice", all[i].t);
        expect_point("ctest.threads.shared", all[i].t, all[i].v);
    }
    expect_chunks("ctest.threads.shared", "max 10");
}

/* Threads send while the handle is freed: every send either is accepted
   (and then delivered: free flushes) or fails with STOPPED or INVALID. */
struct racer {
    mq_source *src;
    mq_metric *handle; /* sends by handle when set, by name otherwise */
    char metric[64];
    atomic_long accepted;
};

static void *racer_main(void *arg) {
    struct racer *r = arg;
    for (long k = 0;; k++) {
        int rc = r->handle != NULL ? mq_metric_send(r->handle, T0 + k, (double)k, 10)
                                   : mq_source_send(r->src, r->metric, T0 + k, (double)k, 10);
        if (rc == MQ_OK) {
            atomic_store(&r->accepted, k + 1);
            continue;
        }
        CHECK_MSG(rc == MQ_ERR_STOPPED || rc == MQ_ERR_INVALID, "send during free: %d %s", rc, mq_last_error());
        return NULL;
    }
}

static void test_free_race(void) {
    fprintf(stderr, "== free while sending\n");
    mq_source *src = mq_source_new(url, "ctest-freerace", 30);
    if (src == NULL) {
        FAIL("mq_source_new: %s", mq_last_error());
        return;
    }
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 100));
    struct racer racers[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        racers[i].src = src;
        atomic_init(&racers[i].accepted, 0);
        snprintf(racers[i].metric, sizeof racers[i].metric, "ctest.freerace.m%d", i);
        EXPECT(MQ_OK, mq_source_declare(src, racers[i].metric, NULL, 10));
        racers[i].handle = i == 2 ? mq_source_metric(src, racers[i].metric) : NULL;
    }
    CHECK_MSG(racers[2].handle != NULL, "mq_source_metric: %s", mq_last_error());
    for (int i = 0; i < 3; i++) {
        pthread_create(&th[i], NULL, racer_main, &racers[i]);
    }
    /* Free once every racer is sending (a loaded machine may start a thread
       late), while they go on sending. */
    double deadline = now_s() + 10;
    for (int i = 0; i < 3 && now_s() < deadline; i += atomic_load(&racers[i].accepted) > 0) {
        sched_yield();
    }
    mq_source_free(src);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        long accepted = atomic_load(&racers[i].accepted);
        fprintf(stderr, "  %s: %ld accepted\n", racers[i].metric, accepted);
        CHECK_MSG(accepted > 0, "%s: no point accepted within 10 s", racers[i].metric);
        expect_seq(racers[i].metric, accepted, T0, 1, 0, 1);
        expect_chunks(racers[i].metric, "max 100");
    }
    /* The source is freed: its metric handle is invalid for good. */
    EXPECT_ERR(MQ_ERR_INVALID, "metric handle", mq_metric_send(racers[2].handle, T0 + (INT64_C(1) << 40), 1, 1));
}

/* Every metric handle call with a value that is not a live handle. */
static void metric_calls_invalid(mq_metric *m) {
    int64_t t = T0;
    double v = 1;
    EXPECT_ERR(MQ_ERR_INVALID, "metric handle", mq_metric_send(m, t, v, 1));
    EXPECT_ERR(MQ_ERR_INVALID, "metric handle", mq_metric_send_batch(m, &t, &v, 1, 1));
    EXPECT_ERR(MQ_ERR_INVALID, "metric handle", mq_metric_send_batch(m, NULL, NULL, 0, 1));
}

/* Metric handles (mq_source_metric, mq_metric_send, mq_metric_send_batch):
   the same rules as sends by name, and misuse is MQ_ERR_INVALID. */
static void test_metric_handles(void) {
    fprintf(stderr, "== metric handles\n");
    int local;
    metric_calls_invalid(NULL);
    metric_calls_invalid((mq_metric *)(uintptr_t)1);
    metric_calls_invalid((mq_metric *)(uintptr_t)0x7fff12345678);
    metric_calls_invalid((mq_metric *)&local);
    metric_calls_invalid((mq_metric *)(uintptr_t)-1);
    CHECK(mq_source_metric(NULL, "ctest.handle.a") == NULL);
    CHECK_MSG(strstr(mq_last_error(), "handle") != NULL, "mq_source_metric(NULL): %s", mq_last_error());
    CHECK(mq_source_metric((mq_source *)(uintptr_t)0x7fff12345678, "ctest.handle.a") == NULL);

    mq_source *src = mq_source_create(url, "ctest-handles");
    CHECK(src != NULL);
    if (src == NULL) return;
    /* Before connecting: a handle, whose sends say why they fail. */
    mq_metric *early = mq_source_metric(src, "ctest.handle.a");
    CHECK_MSG(early != NULL, "mq_source_metric before connecting: %s", mq_last_error());
    EXPECT_ERR(MQ_ERR_INVALID, "not connected", mq_metric_send(early, T0, 1, 1));
    /* A source handle is no metric handle. */
    metric_calls_invalid((mq_metric *)src);
    EXPECT(MQ_OK, mq_source_connect(src, 30));
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 10));

    CHECK(mq_source_metric(src, NULL) == NULL);
    CHECK(mq_source_metric(src, "") == NULL);
    CHECK_MSG(strstr(mq_last_error(), "empty") != NULL, "empty name: %s", mq_last_error());
    CHECK(mq_source_metric(src, "ctest.handle.*") == NULL);
    char long_name[MQ_MAX_NAME_LENGTH + 2];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    CHECK(mq_source_metric(src, long_name) == NULL);

    mq_metric *a = mq_source_metric(src, "ctest.handle.a");
    CHECK(a == early);
    CHECK(mq_source_metric(src, "ctest.handle.a") == a);
    mq_metric *b = mq_source_metric(src, "ctest.handle.b");
    CHECK(b != NULL && b != a);
    EXPECT_ERR(MQ_ERR_UNDECLARED, "ctest.handle.a", mq_metric_send(a, T0, 1, 1));
    EXPECT(MQ_OK, mq_source_declare_many(src, "[\"ctest.handle.a\", \"ctest.handle.b\"]", 10));

    /* By handle and by name, one metric, one order. */
    for (int i = 0; i < 25; i++) {
        int rc = i % 5 == 4 ? mq_source_send(src, "ctest.handle.a", T0 + i, i, 5) : mq_metric_send(a, T0 + i, i, 5);
        CHECK_MSG(rc == MQ_OK, "send %d: %d %s", i, rc, mq_last_error());
    }
    EXPECT_ERR(MQ_ERR_ORDER, "ctest.handle.a", mq_metric_send(a, T0 + 24, 0, 5));
    EXPECT_ERR(MQ_ERR_ORDER, "ctest.handle.a", mq_metric_send(a, T0, 0, 5));
    int64_t times[10];
    double values[10];
    for (int i = 0; i < 10; i++) {
        times[i] = T0 + 25 + i;
        values[i] = 25 + i;
    }
    EXPECT(MQ_OK, mq_metric_send_batch(a, times, values, 10, 5));
    EXPECT_ERR(MQ_ERR_ORDER, "ctest.handle.a", mq_metric_send_batch(a, times, values, 10, 5));
    EXPECT(MQ_OK, mq_metric_send_batch(a, NULL, NULL, 0, 5));
    EXPECT(MQ_ERR_INVALID, mq_metric_send_batch(a, NULL, values, 3, 5));
    EXPECT(MQ_ERR_INVALID, mq_metric_send(a, T0 + 100, 1, -1));
    EXPECT(MQ_ERR_INVALID, mq_metric_send(a, T0 + 100, 1, NAN));
    expect_seq("ctest.handle.a", 35, T0, 1, 0, 1);
    expect_chunks("ctest.handle.a", "exact 10,10,10,5");

    /* A handle stays valid while its source lives. */
    for (int i = 0; i < 3; i++) send_ok(src, "ctest.handle.b", T0 + i, i);
    EXPECT(MQ_OK, mq_metric_send(b, T0 + 3, 3, 5));
    expect_point("ctest.handle.b", T0 + 3, 3);
    expect_chunks("ctest.handle.b", "max 10");
    EXPECT(MQ_OK, mq_source_flush(src, 10));
    mq_stats st;
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK_MSG(st.points_accepted == 39, "accepted %" PRIu64 ", want 39", st.points_accepted);

    EXPECT(MQ_OK, mq_source_stop(src, 10));
    EXPECT(MQ_ERR_STOPPED, mq_metric_send(a, T0 + 100, 1, 1));
    EXPECT(MQ_ERR_STOPPED, mq_metric_send_batch(b, times, values, 1, 1));
    mq_source_free(src);
    metric_calls_invalid(a);
    metric_calls_invalid(b);
    CHECK(mq_source_metric(src, "ctest.handle.a") == NULL);
}

/* ----------------------------------------------------------------------- */
/* Staging under contention (stage.c). Threads send, singly and in batches,
   to a metric of their own and to one shared metric, while another thread
   flushes, changes chunk sizes (1, 7, the buffer's size, by hand) and
   declares again; the buffer holds 256 points, so that reservations run
   out and senders wait for space. Then sources are stopped, or freed by
   two threads at once, while threads still send and flush. Every accepted
   point must reach the sink once, in order, the counters must add up, and
   no call may stall. */

enum {
    STRESS_THREADS = 4,
    STRESS_OWN = 6000,
    STRESS_SHARED = 1500,
    STRESS_BUFFER = 256,
    STRESS_ROUNDS = 8,
    STRESS_STAGED = 16
};

/* Every call gets a timeout far beyond any wait the flushing thread lets
   happen, so that a stall shows as a slow call rather than a timeout. */
#define STRESS_TIMEOUT 30.0
#define STRESS_SLOW 10.0

static const int64_t stress_chunk_sizes[] = {1, 7, STRESS_BUFFER, 0};

struct stress_sender {
    mq_source *src;
    int id;
    char own[64];
    const char *shared; /* NULL: own metric only */
    long own_target;    /* points to send to own; 0: until a call fails */
    atomic_long own_ok; /* own points accepted: T0 .. T0+own_ok-1 */
    struct shared_point accepted[STRESS_SHARED + 3];
    int shared_ok;
    long points_ok; /* points accepted, counted per MQ_OK */
    int order_errors, last_rc;
    double slowest;
};

static atomic_llong stress_clock; /* next timestamp offset of the shared metric */
static atomic_int stress_senders; /* senders still sending */

/* rc = call, keeping the slowest call's duration. */
#define STRESS_TIMED(w, rc, call)                                                   \
    do {                                                                            \
        double start_ = now_s();                                                    \
        (rc) = (call);                                                              \
        double took_ = now_s() - start_;                                            \
        if (took_ > (w)->slowest) (w)->slowest = took_;                             \
    } while (0)

/* One point of the shared metric (or three in a batch), with a timestamp
   from the common clock. A thread that draws a timestamp and is overtaken
   before its send gets MQ_ERR_ORDER, and draws again: the threads do not
   take turns. */
static int stress_send_shared(struct stress_sender *w, int batch) {
    int n = batch ? 3 : 1;
    for (;;) {
        int64_t t = T0 + atomic_fetch_add(&stress_clock, n);
        int64_t times[3];
        double values[3];
        for (int i = 0; i < n; i++) {
            times[i] = t + i;
            values[i] = w->id * 1e6 + w->shared_ok + i;
        }
        if ((w->shared_ok + w->order_errors) % 5 == 0) sched_yield(); /* let another thread overtake */
        int rc;
        if (n == 1) {
            STRESS_TIMED(w, rc, mq_source_send(w->src, w->shared, t, values[0], STRESS_TIMEOUT));
        } else {
            STRESS_TIMED(w, rc, mq_source_send_batch(w->src, w->shared, times, values, 3, STRESS_TIMEOUT));
        }
        if (rc == MQ_OK) {
            for (int i = 0; i < n; i++) {
                w->accepted[w->shared_ok].t = times[i];
                w->accepted[w->shared_ok].v = values[i];
                w->shared_ok++;
            }
            w->points_ok += n;
            return MQ_OK;
        }
        if (rc != MQ_ERR_ORDER) return rc;
        w->order_errors++;
    }
}

static void *stress_sender_main(void *arg) {
    struct stress_sender *w = arg;
    int64_t times[40];
    double values[40];
    long k = 0;
    int rc = MQ_OK;
    for (int round = 0; w->own_target == 0 || k < w->own_target; round++) {
        /* Every 25th call a batch of 1..40 points, so that batches land
           between staged points of the same metric. */
        long n = round % 25 == 0 ? 1 + round / 25 % 40 : 0;
        if (w->own_target > 0 && n > w->own_target - k) n = w->own_target - k;
        if (n > 0) {
            for (long i = 0; i < n; i++) {
                times[i] = T0 + k + i;
                values[i] = (double)(k + i);
            }
            STRESS_TIMED(w, rc, mq_source_send_batch(w->src, w->own, times, values, (size_t)n, STRESS_TIMEOUT));
        } else {
            n = 1;
            STRESS_TIMED(w, rc, mq_source_send(w->src, w->own, T0 + k, (double)k, STRESS_TIMEOUT));
        }
        if (rc != MQ_OK) break;
        k += n;
        w->points_ok += n;
        atomic_store(&w->own_ok, k);
        if (w->shared != NULL && round % 3 == 0 && w->shared_ok < STRESS_SHARED) {
            rc = stress_send_shared(w, round % 31 == 0);
            if (rc != MQ_OK) break;
        }
    }
    w->last_rc = rc;
    if (w->own_target > 0) {
        CHECK_MSG(rc == MQ_OK, "stress thread %d: %d after %ld points: %s", w->id, rc, k, mq_last_error());
    }
    atomic_fetch_sub(&stress_senders, 1);
    return NULL;
}

struct stress_chaos {
    mq_source *src;
    const char *metrics[STRESS_THREADS + 1];
    int metric_count;
    int freeing; /* calls may fail with STOPPED or INVALID once the handle is freed */
    atomic_int stop;
    int calls;
};

static int stress_chaos_ok(struct stress_chaos *c, int rc, const char *what) {
    if (rc == MQ_OK) return 1;
    if (c->freeing && (rc == MQ_ERR_STOPPED || rc == MQ_ERR_INVALID)) return 0;
    FAIL("stress %s: %d (%s): %s", what, rc, mq_strerror(rc), mq_last_error());
    return 0;
}

/* Flushes, sets chunk sizes and reads the counters as fast as it can
   while the senders send; now and then declares the metrics again (which
   makes every stage read the core's facts again). */
static void *stress_chaos_main(void *arg) {
    struct stress_chaos *c = arg;
    uint64_t accepted = 0, confirmed = 0; /* counters only grow */
    for (int i = 0; !atomic_load(&c->stop); i++, c->calls++) {
        const char *metric = c->metrics[i % c->metric_count];
        int64_t size = stress_chunk_sizes[i / c->metric_count % 4];
        if (!stress_chaos_ok(c, mq_source_set_chunk_size(c->src, metric, size), "set_chunk_size")) break;
        if (i % 2 == 0 && !stress_chaos_ok(c, mq_source_flush(c->src, STRESS_TIMEOUT), "flush")) break;
        mq_stats st;
        if (!stress_chaos_ok(c, mq_source_stats(c->src, &st, sizeof st), "stats")) break;
        CHECK_MSG(st.points_accepted >= accepted && st.points_confirmed >= confirmed,
                  "counters went down: accepted %" PRIu64 " -> %" PRIu64 ", confirmed %" PRIu64 " -> %" PRIu64,
                  accepted, st.points_accepted, confirmed, st.points_confirmed);
        accepted = st.points_accepted;
        confirmed = st.points_confirmed;
        if (!c->freeing && i % 64 == 0) {
            stress_chaos_ok(c, mq_source_declare(c->src, metric, NULL, STRESS_TIMEOUT), "declare");
        }
    }
    return NULL;
}

static mq_source *stress_source(const char *token, struct stress_chaos *chaos) {
    mq_source *src = mq_source_create(url, token);
    CHECK(src != NULL);
    if (src == NULL) return NULL;
    EXPECT(MQ_OK, mq_source_set_max_buffered(src, STRESS_BUFFER));
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 7));
    EXPECT(MQ_OK, mq_source_connect(src, 30));
    char names[1024] = "[";
    for (int i = 0; i < chaos->metric_count; i++) {
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s\"%s\"", i ? ", " : "", chaos->metrics[i]);
    }
    strcat(names, "]");
    EXPECT(MQ_OK, mq_source_declare_many(src, names, 30));
    chaos->src = src;
    return src;
}

struct stress_freer {
    mq_source *src;
    atomic_int *go;
    double took;
};

static void *stress_freer_main(void *arg) {
    struct stress_freer *f = arg;
    while (!atomic_load(f->go)) {
    }
    double start = now_s();
    mq_source_free(f->src);
    f->took = now_s() - start;
    return NULL;
}

/* Sends by name reach their metric whatever order the host sends in:
   the stage a thread expects (the one it sent to last, or the one that
   followed that one last time) is only taken for its own name, and never
   one of another source. Names of equal length that differ only past
   the first 16 bytes, runs of one metric, two sources in turn, orders
   that change; then a send to the freed source the thread sent to last. */
static void test_name_order(void) {
    fprintf(stderr, "== sends by name in changing orders\n");
    enum { SOURCES = 2, METRICS = 4, ROUNDS = 40 };
    static const char *names[SOURCES][METRICS] = {
        {"ctest.order.a0", "ctest.order.a1", "ctest.order.long.name.a2", "ctest.order.long.name.a3"},
        {"ctest.order.b0", "ctest.order.b1", "ctest.order.long.name.b2", "ctest.order.long.name.b3"},
    };
    mq_source *src[SOURCES] = {mq_source_new(url, "ctest-order-a", 30), mq_source_new(url, "ctest-order-b", 30)};
    CHECK(src[0] != NULL && src[1] != NULL);
    if (src[0] == NULL || src[1] == NULL) {
        mq_source_free(src[0]);
        mq_source_free(src[1]);
        return;
    }
    EXPECT(MQ_OK, mq_source_set_chunk_size(src[0], NULL, 1000));
    EXPECT(MQ_OK, mq_source_set_chunk_size(src[1], NULL, 1000));
    EXPECT(MQ_OK, mq_source_declare_many(src[0], "[\"ctest.order.a0\", \"ctest.order.a1\", \"ctest.order.long.name.a2\", "
                                                 "\"ctest.order.long.name.a3\"]", 10));
    EXPECT(MQ_OK, mq_source_declare_many(src[1], "[\"ctest.order.b0\", \"ctest.order.b1\", \"ctest.order.long.name.b2\", "
                                                 "\"ctest.order.long.name.b3\"]", 10));
    long sent[SOURCES][METRICS] = {{0}};
    unsigned shuffle = 2463534242u;
    for (int r = 0; r < ROUNDS; r++) {
        int order[METRICS] = {0, 1, 2, 3};
        for (int k = METRICS - 1; r >= 20 && k > 0; k--) { /* from round 20 on, a new order each round */
            shuffle ^= shuffle << 13;
            shuffle ^= shuffle >> 17;
            shuffle ^= shuffle << 5;
            int j = (int)(shuffle % (unsigned)(k + 1)), o = order[k];
            order[k] = order[j];
            order[j] = o;
        }
        for (int k = 0; k < METRICS; k++) {
            int i = r >= 10 && r < 20 ? order[METRICS - 1 - k] : order[k];
            for (int run = 0; run < (r % 3 == 0 ? 3 : 1); run++) {
                for (int s = 0; s < (r % 2 == 0 ? 1 : SOURCES); s++) {
                    long n = sent[s][i]++;
                    send_ok(src[s], names[s][i], T0 + n, (double)((s * METRICS + i) * 1000 + n));
                }
            }
        }
    }
    for (int s = 0; s < SOURCES; s++) {
        EXPECT(MQ_OK, mq_source_stop(src[s], 10));
        mq_source_free(src[s]);
        for (int i = 0; i < METRICS; i++) { /* fewer than a chunk: one chunk, at the stop */
            char spec[32];
            snprintf(spec, sizeof spec, "exact %ld", sent[s][i]);
            expect_chunks(names[s][i], spec);
        }
    }
    for (int i = 0; i < METRICS; i++) {
        EXPECT_ERR(MQ_ERR_INVALID, "handle", mq_source_send(src[1], names[1][i], T0 + sent[1][i], 1, 1));
    }
    all_calls_invalid(src[1], "freed after sends by name");
}

static void test_stage_stress(void) {
    fprintf(stderr, "== staging under contention\n");
    static struct stress_sender senders[STRESS_THREADS];
    static struct stress_chaos chaos;
    memset(&chaos, 0, sizeof chaos);
    chaos.metrics[0] = "ctest.stress.shared";
    for (int i = 0; i < STRESS_THREADS; i++) {
        memset(&senders[i], 0, sizeof senders[i]);
        snprintf(senders[i].own, sizeof senders[i].own, "ctest.stress.own%d", i);
        chaos.metrics[i + 1] = senders[i].own;
    }
    chaos.metric_count = STRESS_THREADS + 1;
    mq_source *src = stress_source("ctest-stress", &chaos);
    if (src == NULL) return;

    atomic_store(&stress_clock, 0);
    atomic_store(&stress_senders, STRESS_THREADS);
    pthread_t th[STRESS_THREADS], chaos_th;
    double start = now_s();
    for (int i = 0; i < STRESS_THREADS; i++) {
        senders[i].src = src;
        senders[i].id = i;
        senders[i].shared = "ctest.stress.shared";
        senders[i].own_target = STRESS_OWN;
        pthread_create(&th[i], NULL, stress_sender_main, &senders[i]);
    }
    pthread_create(&chaos_th, NULL, stress_chaos_main, &chaos);
    for (int i = 0; i < STRESS_THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    atomic_store(&chaos.stop, 1);
    pthread_join(chaos_th, NULL);
    EXPECT(MQ_OK, mq_source_stop(src, 30));
    double took = now_s() - start;

    long points = 0;
    int n = 0, order_errors = 0;
    double slowest = 0;
    static struct shared_point all[STRESS_THREADS * (STRESS_SHARED + 3)];
    for (int i = 0; i < STRESS_THREADS; i++) {
        struct stress_sender *w = &senders[i];
        points += w->points_ok;
        order_errors += w->order_errors;
        if (w->slowest > slowest) slowest = w->slowest;
        CHECK_MSG(atomic_load(&w->own_ok) == STRESS_OWN, "stress thread %d: %ld own points", i, atomic_load(&w->own_ok));
        expect_seq(w->own, atomic_load(&w->own_ok), T0, 1, 0, 1);
        expect_chunks(w->own, "max 256"); /* the buffer's size: no chunk can be larger */
        memcpy(all + n, w->accepted, (size_t)w->shared_ok * sizeof *all);
        n += w->shared_ok;
    }
    qsort(all, (size_t)n, sizeof *all, by_time);
    for (int i = 0; i < n; i++) {
        CHECK_MSG(i == 0 || all[i].t > all[i - 1].t, "stress shared: timestamp %" PRId64 " accepted twice", all[i].t);
        expect_point("ctest.stress.shared", all[i].t, all[i].v);
    }
    expect_chunks("ctest.stress.shared", "max 256");

    mq_stats st;
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    fprintf(stderr,
            "  %d threads: %.3f s, %ld points accepted (%d shared, %d MQ_ERR_ORDER retries), %d chaos rounds, "
            "%" PRIu64 " waits for space, slowest call %.3f s\n",
            STRESS_THREADS, took, points, n, order_errors, chaos.calls, st.buffer_full_waits, slowest);
    CHECK_MSG(st.points_accepted == (uint64_t)points, "stress: points_accepted %" PRIu64 ", MQ_OK for %ld",
              st.points_accepted, points);
    CHECK_MSG(st.points_confirmed == st.points_accepted && st.points_dropped == 0 && st.buffered_points == 0,
              "stress after stop: accepted %" PRIu64 ", confirmed %" PRIu64 ", dropped %" PRIu64 ", buffered %" PRIu64,
              st.points_accepted, st.points_confirmed, st.points_dropped, st.buffered_points);
    /* No call timed out, so no send was refused for a full buffer. */
    CHECK_MSG(st.buffer_full_timeouts == 0, "stress: buffer_full_timeouts %" PRIu64 " without a timeout",
              st.buffer_full_timeouts);
    CHECK_MSG(slowest < STRESS_SLOW, "stress: a call took %.3f s", slowest);
    mq_source_free(src);

    /* Stopped, or freed by two threads at once, while the senders send and
       the other thread flushes and sets chunk sizes; a few more metrics
       hold staged points (chunk size 7, 3 points each) when it happens.
       Each sender's points up to its first failure (STOPPED or INVALID)
       were accepted and must arrive, and the staged ones too; neither stop
       nor free may wait for a sender's timeout. */
    for (int round = 0; round < STRESS_ROUNDS; round++) {
        int stop = round % 2 == 0;
        memset(&chaos, 0, sizeof chaos);
        for (int i = 0; i < STRESS_THREADS; i++) {
            memset(&senders[i], 0, sizeof senders[i]);
            snprintf(senders[i].own, sizeof senders[i].own, "ctest.stress.%s%d.m%d", stop ? "stop" : "free", round, i);
            chaos.metrics[i] = senders[i].own;
        }
        chaos.metric_count = STRESS_THREADS;
        char token[64], staged[STRESS_STAGED][64];
        snprintf(token, sizeof token, "ctest-stress-%s%d", stop ? "stop" : "free", round);
        src = stress_source(token, &chaos);
        if (src == NULL) return;
        char names[STRESS_STAGED * 72] = "[";
        for (int j = 0; j < STRESS_STAGED; j++) {
            snprintf(staged[j], sizeof staged[j], "ctest.stress.%s%d.staged%d", stop ? "stop" : "free", round, j);
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s\"%s\"", j ? ", " : "", staged[j]);
        }
        strcat(names, "]");
        EXPECT(MQ_OK, mq_source_declare_many(src, names, 30));
        chaos.freeing = 1;
        atomic_store(&stress_senders, STRESS_THREADS);
        for (int i = 0; i < STRESS_THREADS; i++) {
            senders[i].src = src;
            senders[i].id = i;
            pthread_create(&th[i], NULL, stress_sender_main, &senders[i]);
        }
        pthread_create(&chaos_th, NULL, stress_chaos_main, &chaos);
        /* Once every sender has had more points accepted than the buffer
           holds (so it has waited for space), stage a few points... */
        for (int i = 0; i < STRESS_THREADS; i++) {
            while (atomic_load(&senders[i].own_ok) < 1000 && atomic_load(&stress_senders) == STRESS_THREADS) {
                sched_yield();
            }
        }
        for (int j = 0; j < STRESS_STAGED; j++) {
            for (int i = 0; i < 3; i++) {
                EXPECT(MQ_OK, mq_source_send(src, staged[j], T0 + i, i, STRESS_TIMEOUT));
            }
            expect_seq(staged[j], 3, T0, 1, 0, 1);
            expect_chunks(staged[j], "max 3");
        }
        /* ... and stop, or free from two threads at once. */
        double took[2] = {0, 0};
        if (stop) {
            double t = now_s();
            EXPECT(MQ_OK, mq_source_stop(src, 30));
            took[0] = now_s() - t;
        } else {
            atomic_int go = 0;
            struct stress_freer freers[2] = {{src, &go, 0}, {src, &go, 0}};
            pthread_t free_th[2];
            for (int i = 0; i < 2; i++) {
                pthread_create(&free_th[i], NULL, stress_freer_main, &freers[i]);
            }
            atomic_store(&go, 1);
            for (int i = 0; i < 2; i++) {
                pthread_join(free_th[i], NULL);
                took[i] = freers[i].took;
            }
        }
        for (int i = 0; i < STRESS_THREADS; i++) {
            pthread_join(th[i], NULL);
        }
        atomic_store(&chaos.stop, 1);
        pthread_join(chaos_th, NULL);
        fprintf(stderr, "  %s round %d: %.3f s, %.3f s; accepted", stop ? "stop" : "free", round, took[0], took[1]);
        points = 3 * STRESS_STAGED;
        for (int i = 0; i < STRESS_THREADS; i++) {
            struct stress_sender *w = &senders[i];
            long ok = atomic_load(&w->own_ok);
            points += w->points_ok;
            fprintf(stderr, " %ld", ok);
            CHECK_MSG(ok >= 1000, "round %d: thread %d failed early: %d (%s)", round, i, w->last_rc, mq_last_error());
            CHECK_MSG(w->last_rc == MQ_ERR_STOPPED || w->last_rc == MQ_ERR_INVALID, "round %d: thread %d ended with %d",
                      round, i, w->last_rc);
            CHECK_MSG(w->slowest < STRESS_SLOW, "round %d: a send took %.3f s", round, w->slowest);
            expect_seq(w->own, ok, T0, 1, 0, 1);
            expect_chunks(w->own, "max 256");
        }
        fprintf(stderr, "\n");
        CHECK_MSG(took[0] < STRESS_SLOW && took[1] < STRESS_SLOW, "round %d: stop or free took %.3f s, %.3f s", round,
                  took[0], took[1]);
        if (stop) {
            EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
            CHECK_MSG(st.points_accepted == (uint64_t)points && st.points_confirmed == st.points_accepted &&
                          st.points_dropped == 0 && st.buffered_points == 0 && st.buffer_full_timeouts == 0,
                      "round %d after stop: MQ_OK for %ld; accepted %" PRIu64 ", confirmed %" PRIu64 ", dropped %" PRIu64
                      ", buffered %" PRIu64 ", timeouts %" PRIu64,
                      round, points, st.points_accepted, st.points_confirmed, st.points_dropped, st.buffered_points,
                      st.buffer_full_timeouts);
            mq_source_free(src);
        }
    }
}

/* ----------------------------------------------------------------------- */
/* The bounded buffer.                                                       */

struct blocked_send {
    mq_source *src;
    int64_t t;
    double timeout;
    int rc;
    double took;
};

static void *blocked_send_main(void *arg) {
    struct blocked_send *b = arg;
    double start = now_s();
    b->rc = mq_source_send(b->src, "ctest.buffer", b->t, (double)(b->t - T0), b->timeout);
    b->took = now_s() - start;
    return NULL;
}

/* Waits (up to 10 s) until a send of src waits for buffer space: one more
   buffer-full wait than `before`. */
static void wait_for_blocked_send(mq_source *src, uint64_t before) {
    mq_stats st = {0};
    for (double deadline = now_s() + 10; now_s() < deadline; sleep_s(0.001)) {
        EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
        if (st.buffer_full_waits > before) return;
    }
    FAIL("no send waited for buffer space within 10 s (%" PRIu64 " waits)", st.buffer_full_waits);
}

static void test_buffer(void) {
    fprintf(stderr, "== bounded buffer\n");
    mq_source *src = mq_source_create(url, "ctest-buffer");
    CHECK(src != NULL);
    EXPECT_ERR(MQ_ERR_INVALID, "max buffered", mq_source_set_max_buffered(src, 0));
    EXPECT(MQ_ERR_INVALID, mq_source_set_max_buffered(src, -5));
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 0));
    EXPECT(MQ_OK, mq_source_set_max_buffered(src, 10));
    EXPECT_ERR(MQ_ERR_INVALID, "exceeds", mq_source_set_chunk_size(src, "ctest.buffer", 11));
    EXPECT_ERR(MQ_ERR_INVALID, "not connected", mq_source_declare(src, "ctest.buffer", NULL, 5));
    char cfg[8];
    EXPECT(2, mq_source_config(src, cfg, sizeof cfg)); /* "{}" before connecting */
    EXPECT(MQ_OK, mq_source_connect(src, 30));
    EXPECT_ERR(MQ_ERR_INVALID, "before connecting", mq_source_set_max_buffered(src, 20));
    EXPECT(MQ_OK, mq_source_declare(src, "ctest.buffer", NULL, 10));

    for (int i = 0; i < 10; i++) {
        send_ok(src, "ctest.buffer", T0 + i, i);
    }
    /* Full: the 11th waits for its timeout and is not accepted. */
    double start = now_s();
    EXPECT_ERR(MQ_ERR_TIMEOUT, "buffer full", mq_source_send(src, "ctest.buffer", T0 + 10, 10, 0.2));
    double took = now_s() - start;
    CHECK_MSG(took >= 0.15 && took < 0.2 + TIMEOUT_MARGIN, "full send took %.3f s", took);
    int64_t t11 = T0 + 10;
    double v11 = 10;
    EXPECT_ERR(MQ_ERR_TIMEOUT, "buffer full", mq_source_send_batch(src, "ctest.buffer", &t11, &v11, 1, 0.05));
    int64_t times[11];
    double values[11];
    for (int i = 0; i < 11; i++) {
        times[i] = T0 + 100 + i;
        values[i] = i;
    }
    EXPECT_ERR(MQ_ERR_INVALID, "exceed the buffer", mq_source_send_batch(src, "ctest.buffer", times, values, 11, 5));
    mq_stats st;
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK_MSG(st.points_accepted == 10 && st.buffered_points == 10 && st.buffer_full_waits == 2 &&
                  st.buffer_full_timeouts == 2,
              "accepted %" PRIu64 " buffered %" PRIu64 " waits %" PRIu64 " timeouts %" PRIu64, st.points_accepted,
              st.buffered_points, st.buffer_full_waits, st.buffer_full_timeouts);

    /* A send waiting for space gets it when a flush confirms: retrying the
       point that timed out creates no duplicate. */
    struct blocked_send b = {src, T0 + 10, 20, -100, 0};
    pthread_t th;
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    pthread_create(&th, NULL, blocked_send_main, &b);
    wait_for_blocked_send(src, st.buffer_full_waits);
    EXPECT(MQ_OK, mq_source_flush(src, 10));
    pthread_join(th, NULL);
    EXPECT(MQ_OK, b.rc);
    expect_point("ctest.buffer", T0 + 10, 10);
    for (int i = 11; i < 20; i++) {
        send_ok(src, "ctest.buffer", T0 + i, i);
    }
    /* A send waiting for space when the source stops ends at once. */
    struct blocked_send b2 = {src, T0 + 20, 30, -100, 0};
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    pthread_create(&th, NULL, blocked_send_main, &b2);
    wait_for_blocked_send(src, st.buffer_full_waits);
    EXPECT(MQ_OK, mq_source_stop(src, 10));
    pthread_join(th, NULL);
    EXPECT(MQ_ERR_STOPPED, b2.rc);
    CHECK_MSG(b2.took < 5, "blocked send returned after %.3f s", b2.took);
    expect_chunks("ctest.buffer", "exact 10,10");
    mq_source_free(src);
}

/* A bound smaller than the open chunks need: 40 metrics of chunk size 100
   fill a bound of 1,000 points with open chunks after 25 rounds (their
   leases and staged points included), and no chunk has filled. The open
   chunks are published before they fill instead of every send waiting for
   space nothing frees: every point is accepted and arrives, in order. Half
   the metrics are sent to by handle, half by name. */
static void test_open_chunks_beyond_bound(void) {
    fprintf(stderr, "== open chunks beyond the bound\n");
    enum { METRICS = 40, ROUNDS = 60 };
    mq_source *src = mq_source_create(url, "ctest-open-chunks");
    CHECK(src != NULL);
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 100));
    EXPECT(MQ_OK, mq_source_set_max_buffered(src, 1000));
    EXPECT(MQ_OK, mq_source_connect(src, 30));
    char names[METRICS][32], json[METRICS * 40 + 3];
    size_t used = 0;
    mq_metric *handles[METRICS];
    json[used++] = '{';
    for (int i = 0; i < METRICS; i++) {
        snprintf(names[i], sizeof names[i], "ctest.open.m%d", i);
        used += (size_t)snprintf(json + used, sizeof json - used, "%s\"%s\": {}", i ? ", " : "", names[i]);
    }
    snprintf(json + used, sizeof json - used, "}");
    EXPECT(MQ_OK, mq_source_declare_many(src, json, 30));
    for (int i = 0; i < METRICS; i++) CHECK((handles[i] = mq_source_metric(src, names[i])) != NULL);
    log_clear();
    int refused = 0;
    for (int k = 0; k < ROUNDS && !refused; k++) {
        for (int i = 0; i < METRICS; i++) {
            int64_t t = T0 + k;
            double v = i * 1000 + k;
            int rc = i % 2 ? mq_metric_send(handles[i], t, v, 5) : mq_source_send(src, names[i], t, v, 5);
            if (rc != MQ_OK) {
                CHECK_MSG(0, "round %d, %s: %d %s", k, names[i], rc, mq_last_error());
                refused = 1;
                break;
            }
        }
    }
    EXPECT(MQ_OK, mq_source_flush(src, 30));
    mq_stats st;
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK_MSG(st.points_accepted == METRICS * ROUNDS && st.buffer_full_timeouts == 0 && st.points_dropped == 0,
              "accepted %" PRIu64 " timeouts %" PRIu64 " dropped %" PRIu64, st.points_accepted,
              st.buffer_full_timeouts, st.points_dropped);
    CHECK_MSG(log_contains("before they filled"), "early sealing not logged");
    for (int i = 0; i < METRICS; i++) {
        expect_seq(names[i], ROUNDS, T0, 1, i * 1000, 1);
        expect_chunks(names[i], "max 100");
    }
    EXPECT(MQ_OK, mq_source_stop(src, 30));
    mq_source_free(src);
}

/* ----------------------------------------------------------------------- */
/* Configuration hook.                                                       */

struct hook_state {
    pthread_mutex_t mu;
    int calls;
    int refuse;
    char last[4096];
    int declare_rc, stop_rc, chunk_rc, config_len, period_rc;
    int free_in_hook;
};

static int config_hook(mq_source *src, const char *json, void *user) {
    struct hook_state *h = user;
    pthread_mutex_lock(&h->mu);
    h->calls++;
    snprintf(h->last, sizeof h->last, "%s", json);
    int first = h->calls == 1, refuse = h->refuse, free_it = h->free_in_hook;
    pthread_mutex_unlock(&h->mu);
    if (free_it) {
        mq_source_free(src);
        return 0;
    }
    if (refuse) {
        return 7;
    }
    if (first) {
        h->chunk_rc = mq_source_set_chunk_size(src, "ctest.config.hooked", 2);
        h->declare_rc = mq_source_declare(src, "ctest.config.hooked", "{\"rate\": 5}", 10);
        h->stop_rc = mq_source_stop(src, 1);
        h->config_len = mq_source_config(src, NULL, 0);
        h->period_rc = mq_source_set_period(src, 0.2);
    }
    return strstr(json, "\"refuse\"") ? 7 : 0;
}

static void test_config_hook(void) {
    fprintf(stderr, "== configuration hook\n");
    static struct hook_state h = {.mu = PTHREAD_MUTEX_INITIALIZER};
    mq_source *src = mq_source_create(url, "ctest-config");
    EXPECT(MQ_OK, mq_source_set_config_handler(src, config_hook, &h));

    /* Refused at connect: MQ_ERR_RPC; a retry with the hook accepting works. */
    h.refuse = 1;
    EXPECT_ERR(MQ_ERR_RPC, "config hook returned 7", mq_source_connect(src, 30));
    h.refuse = 0;
    h.calls = 0;
    EXPECT(MQ_OK, mq_source_connect(src, 30));
    CHECK(h.calls == 1);
    CHECK_MSG(strstr(h.last, "\"rate\":5") != NULL, "hook got %s", h.last);
    EXPECT(MQ_OK, h.chunk_rc);
    EXPECT(MQ_OK, h.declare_rc);
    EXPECT(MQ_ERR_INVALID, h.stop_rc);
    EXPECT(MQ_OK, h.period_rc);
    CHECK(h.config_len > 0);

    /* A "config" RPC calls the hook again; mq_source_config follows. */
    const char *answer = ctl_request("config ctest-config {\"rate\": 7, \"name\": \"caf\xc3\xa9\"}");
    CHECK_MSG(strcmp(answer, "ok") == 0, "config push: %s", answer);
    CHECK(h.calls == 2);
    CHECK_MSG(strstr(h.last, "\"rate\":7") != NULL, "hook got %s", h.last);
    char cfg[4096];
    CHECK(mq_source_config(src, cfg, sizeof cfg) > 0);
    CHECK_MSG(strstr(cfg, "\"rate\":7") != NULL && strstr(cfg, "caf\xc3\xa9") != NULL, "config: %s", cfg);

    /* The hook refuses: the manager gets an error reply. */
    answer = ctl_request("config ctest-config {\"refuse\": true}");
    CHECK_MSG(strncmp(answer, "error", 5) == 0 && strstr(answer, "7") != NULL, "refused config push: %s", answer);
    CHECK(h.calls == 3);

    /* Removing the hook. */
    EXPECT(MQ_OK, mq_source_set_config_handler(src, NULL, NULL));
    answer = ctl_request("config ctest-config {\"rate\": 8}");
    CHECK_MSG(strcmp(answer, "ok") == 0, "config push: %s", answer);
    CHECK(h.calls == 3);

    send_ok(src, "ctest.config.hooked", T0, 1);
    send_ok(src, "ctest.config.hooked", T0 + 1, 2);
    send_ok(src, "ctest.config.hooked", T0 + 2, 3);
    expect_chunks("ctest.config.hooked", "exact 2,1");
    EXPECT(MQ_OK, mq_source_stop(src, 10));
    mq_source_free(src);

    /* Freeing the source from inside its hook, during connect. */
    static struct hook_state h2 = {.mu = PTHREAD_MUTEX_INITIALIZER, .free_in_hook = 1};
    src = mq_source_create(url, "ctest-config-free");
    EXPECT(MQ_OK, mq_source_set_config_handler(src, config_hook, &h2));
    EXPECT(MQ_ERR_STOPPED, mq_source_connect(src, 30));
    CHECK(h2.calls == 1);
    EXPECT(MQ_ERR_INVALID, mq_source_flush(src, 1));
}

/* ----------------------------------------------------------------------- */
/* IntervalSource.                                                           */

struct ticker {
    const char *metric;
    atomic_int rounds;  /* update calls so far (another thread may wait for them) */
    int stop_at;        /* call mq_source_stop in this round */
    int free_at;        /* call mq_source_free in this round */
    int fail_at;        /* return 42 in this round */
    int publish_err_at; /* return MQ_ERR_PUBLISH in this round */
    int rc;             /* status of the stop/free/set_period calls */
    double started, first, last;
    int64_t times[64];
};

static int tick(mq_source *src, void *user) {
    struct ticker *k = user;
    int round = ++k->rounds;
    k->last = now_s();
    if (round == 1) k->first = k->last;
    int64_t t = mq_now();
    if (round <= 64) k->times[round - 1] = t;
    int rc = mq_source_send(src, k->metric, t, round, 5);
    if (rc != MQ_OK) {
        FAIL("tick %s round %d: %d %s", k->metric, round, rc, mq_last_error());
    }
    if (round == 2) {
        int prc = mq_source_set_period(src, 0.03);
        if (prc != MQ_OK) FAIL("set_period in update: %d %s", prc, mq_last_error());
    }
    if (round == k->stop_at) k->rc = mq_source_stop(src, 10);
    if (round == k->free_at) {
        mq_source_free(src);
        k->rc = MQ_OK;
    }
    if (round == k->fail_at) return 42;
    if (round == k->publish_err_at) return MQ_ERR_PUBLISH;
    return 0;
}

static void expect_ticks(struct ticker *k) {
    for (int i = 0; i < k->rounds && i < 64; i++) {
        expect_point(k->metric, k->times[i], i + 1);
    }
    expect_chunks(k->metric, "max 1");
}

static mq_source *interval_source(const char *token, const char *metric) {
    mq_source *src = mq_source_new(url, token, 30);
    if (src == NULL) {
        FAIL("mq_source_new %s: %s", token, mq_last_error());
        return NULL;
    }
    EXPECT(MQ_OK, mq_source_declare(src, metric, "{\"rate\": 20}", 10));
    return src;
}

struct stopper {
    mq_source *src;
    struct ticker *running;
    int second_rc, stop_rc;
};

/* Waits (up to 10 s: a loaded machine may be slow to schedule) until k's
   update has run rounds times. */
static void wait_rounds(struct ticker *k, int rounds) {
    for (double deadline = now_s() + 10; atomic_load(&k->rounds) < rounds && now_s() < deadline;) {
        sleep_s(0.001);
    }
}

static void *stopper_main(void *arg) {
    struct stopper *s = arg;
    wait_rounds(s->running, 1);
    s->second_rc = mq_source_run_interval(s->src, 1, tick, NULL);
    wait_rounds(s->running, 3);
    s->stop_rc = mq_source_stop(s->src, 10);
    return NULL;
}

static void test_interval(void) {
    fprintf(stderr, "== interval source\n");
    /* Bad arguments, and a source that is not connected. */
    mq_source *idle = mq_source_create(url, "ctest-interval-idle");
    EXPECT_ERR(MQ_ERR_INVALID, "not connected", mq_source_run_interval(idle, 1, tick, NULL));
    EXPECT(MQ_OK, mq_source_set_period(idle, 1));
    mq_source_free(idle);

    /* a: the update stops the source in round 5; the period changes in
       round 2. The first update runs at once, even though the source
       connected a while ago (and no "missed deadline" warning results). */
    static struct ticker a = {.metric = "ctest.interval.a", .stop_at = 5, .rc = -100};
    mq_source *src = interval_source("ctest-interval-a", a.metric);
    if (src == NULL) return;
    EXPECT(MQ_ERR_INVALID, mq_source_run_interval(src, 0.05, NULL, NULL));
    const double bad[] = {0, -1, NAN, INFINITY, 1e-12};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        EXPECT_ERR(MQ_ERR_INVALID, "period", mq_source_run_interval(src, bad[i], tick, &a));
        EXPECT_ERR(MQ_ERR_INVALID, "period", mq_source_set_period(src, bad[i]));
    }
    sleep_s(0.3);
    log_clear();
    a.started = now_s();
    EXPECT(MQ_OK, mq_source_run_interval(src, 0.05, tick, &a));
    double took = now_s() - a.started;
    CHECK_MSG(a.rounds == 5, "a: %d rounds", a.rounds);
    EXPECT(MQ_OK, a.rc);
    CHECK_MSG(a.first - a.started < SLACK, "first update after %.3f s", a.first - a.started);
    CHECK_MSG(a.last - a.first >= 0.08 && took < 3, "a: rounds 1-5 took %.3f s", a.last - a.first);
    CHECK_MSG(!log_contains("missed"), "a: a missed-deadline warning was logged");
    EXPECT(MQ_ERR_STOPPED, mq_source_send(src, a.metric, mq_now(), 0, 1));
    mq_source_free(src);
    expect_ticks(&a);

    /* b: the update returns 42 in round 3: the source stops (flushing). */
    static struct ticker b = {.metric = "ctest.interval.b", .fail_at = 3};
    src = interval_source("ctest-interval-b", b.metric);
    if (src == NULL) return;
    EXPECT_ERR(MQ_ERR_STOPPED, "42", mq_source_run_interval(src, 0.02, tick, &b));
    CHECK_MSG(b.rounds == 3, "b: %d rounds", b.rounds);
    EXPECT(MQ_ERR_STOPPED, mq_source_send(src, b.metric, mq_now(), 0, 1));
    mq_source_free(src);
    expect_ticks(&b);

    /* c: another thread stops it; a second run_interval meanwhile is refused;
       MQ_ERR_PUBLISH from the update is ridden out. */
    static struct ticker c = {.metric = "ctest.interval.c", .publish_err_at = 1};
    src = interval_source("ctest-interval-c", c.metric);
    if (src == NULL) return;
    struct stopper s = {src, &c, -100, -100};
    pthread_t th;
    pthread_create(&th, NULL, stopper_main, &s);
    EXPECT(MQ_OK, mq_source_run_interval(src, 0.02, tick, &c));
    pthread_join(th, NULL);
    EXPECT(MQ_ERR_INVALID, s.second_rc);
    EXPECT(MQ_OK, s.stop_rc);
    CHECK_MSG(c.rounds >= 3, "c: %d rounds", c.rounds);
    mq_source_free(src);
    expect_ticks(&c);

    /* d: the update frees the source. */
    static struct ticker d = {.metric = "ctest.interval.d", .free_at = 3, .rc = -100};
    src = interval_source("ctest-interval-d", d.metric);
    if (src == NULL) return;
    EXPECT(MQ_OK, mq_source_run_interval(src, 0.02, tick, &d));
    CHECK_MSG(d.rounds == 3, "d: %d rounds", d.rounds);
    EXPECT(MQ_ERR_INVALID, mq_source_send(src, d.metric, mq_now(), 0, 1));
    expect_ticks(&d);
}

/* ----------------------------------------------------------------------- */

static void test_logging(void) {
    fprintf(stderr, "== logging\n");
    EXPECT_ERR(MQ_ERR_INVALID, "log level", mq_set_log_level(5));
    EXPECT(MQ_ERR_INVALID, mq_set_log_level(-1));
    mq_source *src = mq_source_new(url, "ctest-log", 30);
    if (src == NULL) {
        FAIL("mq_source_new: %s", mq_last_error());
        return;
    }
    log_clear();
    EXPECT(MQ_OK, mq_set_log_level(MQ_LOG_WARN));
    /* A metadata key owned by the manager draws a warning. */
    EXPECT(MQ_OK, mq_source_declare(src, "ctest.log.a", "{\"historic\": true}", 10));
    CHECK_MSG(log_contains("30 metadata key"), "no warning captured");
    CHECK(log_contains("ctest-log")); /* the token is part of the line */
    log_clear();
    EXPECT(MQ_OK, mq_set_log_level(MQ_LOG_ERROR));
    EXPECT(MQ_OK, mq_source_declare(src, "ctest.log.b", "{\"historic\": true}", 10));
    CHECK(!log_contains("metadata key"));
    EXPECT(MQ_OK, mq_set_log_level(MQ_LOG_DEBUG));
    EXPECT(MQ_OK, mq_source_declare(src, "ctest.log.c", "{\"historic\": true}", 10));
    CHECK(log_contains("30 metadata key"));
    EXPECT(MQ_OK, mq_set_log_level(MQ_LOG_OFF));
    log_clear();
    EXPECT(MQ_OK, mq_source_declare(src, "ctest.log.d", "{\"historic\": true}", 10));
    CHECK(!log_contains("metadata key"));
    EXPECT(MQ_OK, mq_set_log_level(MQ_LOG_WARN));
    EXPECT(MQ_OK, mq_source_stop(src, 10));
    mq_source_free(src);
}

/* ----------------------------------------------------------------------- */

static void test_perf(void) {
    fprintf(stderr, "== per-point cost\n");
    mq_source *src = mq_source_new(url, "ctest-perf", 30);
    if (src == NULL) {
        FAIL("mq_source_new: %s", mq_last_error());
        return;
    }
    EXPECT(MQ_OK, mq_source_set_chunk_size(src, NULL, 1000));
    EXPECT(MQ_OK, mq_source_declare_many(src, "[\"ctest.perf.send\", \"ctest.perf.batch\"]", 10));
    enum { N = 200000, B = 1000 };
    double start = now_s();
    for (int i = 0; i < N; i++) {
        if (mq_source_send(src, "ctest.perf.send", T0 + i, i, 10) != MQ_OK) {
            FAIL("send %d: %s", i, mq_last_error());
            break;
        }
    }
    double per = (now_s() - start) / N * 1e9;
    static int64_t times[B];
    static double values[B];
    start = now_s();
    for (int j = 0; j < N / B; j++) {
        for (int i = 0; i < B; i++) {
            times[i] = T0 + (int64_t)j * B + i;
            values[i] = j * B + i;
        }
        if (mq_source_send_batch(src, "ctest.perf.batch", times, values, B, 10) != MQ_OK) {
            FAIL("batch %d: %s", j, mq_last_error());
            break;
        }
    }
    double per_batch = (now_s() - start) / N * 1e9;
    fprintf(stderr, "  mq_source_send: %.0f ns per point; mq_source_send_batch: %.0f ns per point\n", per, per_batch);
    /* A channel round trip per point would cost tens of microseconds. */
    CHECK_MSG(per < 5000, "mq_source_send takes %.0f ns per point", per);
    EXPECT(MQ_OK, mq_source_stop(src, 60));
    mq_stats st;
    EXPECT(MQ_OK, mq_source_stats(src, &st, sizeof st));
    CHECK(st.points_accepted == 2 * N && st.points_confirmed == 2 * N && st.chunks_confirmed == 2 * N / 1000);
    mq_source_free(src);
    expect_seq("ctest.perf.send", N, T0, 1, 0, 1);
    expect_chunks("ctest.perf.send", "max 1000");
    expect_seq("ctest.perf.batch", N, T0, 1, 0, 1);
    expect_chunks("ctest.perf.batch", "max 1000");
}

/* fork(): the child cannot use the library (the Go runtime does not survive
   fork), but it must get an error at once, not hang; the parent carries on. */
static void test_fork(void) {
    fprintf(stderr, "== fork\n");
    mq_source *src = mq_source_new(url, "ctest-fork", 10);
    CHECK_MSG(src != NULL, "new: %s", mq_last_error());
    if (src == NULL) return;
    EXPECT(MQ_OK, mq_source_declare(src, "ctest.fork", NULL, 10));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int bad = 0;
        if (mq_source_send(src, "ctest.fork", mq_now(), 1, 1) != MQ_ERR_INVALID) bad |= 1;
        if (strstr(mq_last_error(), "fork") == NULL) bad |= 2;
        if (mq_source_new(url, "ctest-fork-child", 1) != NULL) bad |= 4;
        if (mq_source_flush(src, 1) != MQ_ERR_INVALID) bad |= 8;
        if (strncmp(mq_version(), "libmetricq/", 11) != 0) bad |= 16;
        mq_source_free(src); /* the parent's source: a no-op here */
        _exit(bad);
    }
    CHECK_MSG(pid > 0, "fork failed");
    if (pid > 0) {
        int status = 0;
        double deadline = now_s() + 10;
        pid_t done = 0;
        while ((done = waitpid(pid, &status, WNOHANG)) == 0 && now_s() < deadline) {
            sleep_s(0.01);
        }
        if (done == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            FAIL("the forked child hung in a libmetricq call");
        } else {
            CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child checks failed: status %d", status);
        }
    }
    EXPECT(MQ_OK, mq_source_stop(src, 10)); /* the parent is unaffected */
    mq_source_free(src);
}

/* The client version reaches the manager's discover; the reconnect timeout
   makes a source whose broker is gone stop on its own, and mq_source_wait
   learns of it without sending. */
static void test_settings_and_wait(void) {
    fprintf(stderr, "== client version, reconnect timeout, mq_source_wait\n");
    const char *proxy = getenv("METRICQ_TEST_PROXY_URL");
    if (proxy == NULL || proxy[0] == '\0') {
        FAIL("METRICQ_TEST_PROXY_URL not set");
        return;
    }
    mq_source *src = mq_source_create(proxy, "ctest-settings");
    CHECK(src != NULL);
    EXPECT_ERR(MQ_ERR_INVALID, "NULL", mq_source_set_client_version(src, NULL));
    EXPECT_ERR(MQ_ERR_INVALID, "control", mq_source_set_client_version(src, "1.0\n"));
    EXPECT_ERR(MQ_ERR_INVALID, "UTF-8", mq_source_set_client_version(src, "\xff"));
    EXPECT_ERR(MQ_ERR_INVALID, "reconnect timeout", mq_source_set_reconnect_timeout(src, 0));
    EXPECT_ERR(MQ_ERR_INVALID, "reconnect timeout", mq_source_set_reconnect_timeout(src, NAN));
    EXPECT_ERR(MQ_ERR_INVALID, "heartbeat", mq_source_set_heartbeat(src, 0.5));
    EXPECT_ERR(MQ_ERR_INVALID, "heartbeat", mq_source_set_heartbeat(src, 70000));
    EXPECT_ERR(MQ_ERR_INVALID, "heartbeat", mq_source_set_heartbeat(src, NAN));
    EXPECT(MQ_OK, mq_source_set_heartbeat(src, 5));
    EXPECT(MQ_OK, mq_source_set_client_version(src, "ctest-9.9"));
    EXPECT(MQ_OK, mq_source_set_reconnect_timeout(src, 1.0));
    EXPECT_ERR(MQ_ERR_INVALID, "timeout", mq_source_wait(src, -1));
    /* Not connected and not stopped: nothing to wait for yet. */
    EXPECT(MQ_ERR_TIMEOUT, mq_source_wait(src, 0.01));
    EXPECT(MQ_OK, mq_source_connect(src, 20));
    EXPECT_ERR(MQ_ERR_INVALID, "before connecting", mq_source_set_client_version(src, "other"));
    EXPECT_ERR(MQ_ERR_INVALID, "before connecting", mq_source_set_reconnect_timeout(src, 5));
    EXPECT_ERR(MQ_ERR_INVALID, "before connecting", mq_source_set_heartbeat(src, 5));
    const char *answer = ctl_request("discover ctest-settings");
    CHECK_MSG(strcmp(answer, "ok version=ctest-9.9") == 0, "discover: %s", answer);
    EXPECT(MQ_OK, mq_source_declare(src, "ctest.settings", NULL, 20));

    double start = now_s();
    EXPECT(MQ_ERR_TIMEOUT, mq_source_wait(src, 0.2));
    CHECK_MSG(now_s() - start >= 0.2 - 0.01, "wait returned after %.3f s", now_s() - start);

    /* The broker goes away for good: after about the reconnect timeout the
       source stops on its own, and mq_source_wait says why. */
    answer = ctl_request("cut");
    CHECK_MSG(strcmp(answer, "ok") == 0, "cut: %s", answer);
    start = now_s();
    EXPECT(MQ_ERR_CONNECT, mq_source_wait(src, 30));
    double took = now_s() - start;
    fprintf(stderr, "  stopped on its own after %.3f s: %s\n", took, mq_last_error());
    CHECK_MSG(took >= 0.9 && took < 1.0 + 10, "stopped after %.3f s, reconnect timeout 1 s", took);
    CHECK(mq_last_error()[0] != '\0');
    EXPECT(MQ_ERR_CONNECT, mq_source_wait(src, 1)); /* again: the same answer */
    EXPECT_ERR(MQ_ERR_CONNECT, "stopped", mq_source_send(src, "ctest.settings", T0, 1, 1));
    mq_source_free(src);

    /* Stopped by a call: MQ_OK. */
    src = mq_source_new(url, "ctest-settings-2", 20);
    CHECK(src != NULL);
    EXPECT(MQ_OK, mq_source_stop(src, 20));
    EXPECT(MQ_OK, mq_source_wait(src, 5));
    mq_source_free(src);
    /* Stopped before it ever connected: MQ_OK at once. */
    src = mq_source_create(url, "ctest-settings-3");
    EXPECT(MQ_OK, mq_source_stop(src, 1));
    EXPECT(MQ_OK, mq_source_wait(src, 1));
    mq_source_free(src);
}

int main(void) {
    url = getenv("METRICQ_TEST_URL");
    if (url == NULL || url[0] == '\0') {
        fprintf(stderr, "METRICQ_TEST_URL is not set; run through libmetricq/capi/ctest (make -f mk/capi.mk test-c)\n");
        return 2;
    }
    log_echo = getenv("CTEST_LOG_ECHO") != NULL;

    test_basics();
    test_invalid_handles();
    mq_set_log_handler(capture_log, &log_text);
    EXPECT(MQ_OK, mq_set_log_level(MQ_LOG_DEBUG));
    test_connect_failures();
    EXPECT(MQ_OK, mq_set_log_level(MQ_LOG_WARN));
    test_source();
    test_threads();
    test_free_race();
    test_metric_handles();
    test_stage_stress();
    test_name_order();
    test_buffer();
    test_open_chunks_beyond_bound();
    test_staging();
    test_config_hook();
    test_interval();
    test_settings_and_wait();
    test_logging();
    test_perf();
    test_fork();
    CHECK_MSG(!log_contains("s3cret"), "a password was logged");
    mq_set_log_handler(NULL, NULL);

    ctl("done");
    int n = atomic_load(&failures);
    fprintf(stderr, n == 0 ? "all C checks passed\n" : "%d C checks failed\n", n);
    return n == 0 ? 0 : 1;
}
