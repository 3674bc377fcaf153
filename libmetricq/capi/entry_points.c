/* The public entry table: every mq_* function of include/metricq.h that
   needs Go, forwarded to the Go exports (libmq_go_*) or, for the calls
   that send or must first hand staged points over, to stage.c, which
   keeps the cgo transition off the per-point path. Nothing is decided
   here but one thing, which only C can check: in a child created by
   fork() after the library was loaded, the Go runtime's threads are gone
   and the first call into Go hangs inside the cgo transition, so after a
   fork every call fails at once with MQ_ERR_INVALID (NULL for
   constructors) and a text saying why. The cost is one load of a flag per
   call. */
#include <pthread.h>
#include <stddef.h>

#include "metricq.h"
#include "capi_internal.h"
#include "stage.h"
#include "_cgo_export.h"

static volatile int forked; /* set in the child of a fork() */

static void on_fork_child(void) { forked = 1; }

__attribute__((constructor)) static void install_fork_guard(void) {
    pthread_atfork(NULL, NULL, on_fork_child);
}

static const char forked_text[] =
    "libmetricq cannot be used in a process forked from the one that loaded it "
    "(the Go runtime inside does not survive fork()); create sources after "
    "forking, or exec";

static int refuse(void) {
    libmq_set_error(forked_text, sizeof forked_text - 1);
    return MQ_ERR_INVALID;
}

#define H(src) ((uintptr_t)(src))
#define GUARD_INT  if (forked) return refuse()
#define GUARD_NULL if (forked) { refuse(); return NULL; }

const char *mq_version(void) {
    if (forked) return "libmetricq/" MQ_VERSION_STRING;
    return libmq_go_version();
}

mq_source *mq_source_create(const char *url, const char *token) {
    GUARD_NULL
    return (mq_source *)libmq_go_source_create((char *)url, (char *)token);
}

mq_source *mq_source_new(const char *url, const char *token, double timeout) {
    GUARD_NULL
    return (mq_source *)libmq_go_source_new((char *)url, (char *)token, timeout);
}

int mq_source_connect(mq_source *src, double timeout) {
    GUARD_INT;
    return libmq_go_source_connect(H(src), timeout);
}

int mq_source_set_max_buffered(mq_source *src, int64_t points) {
    GUARD_INT;
    return libmq_go_source_set_max_buffered(H(src), points);
}

int mq_source_declare(mq_source *src, const char *metric, const char *metadata_json, double timeout) {
    GUARD_INT;
    return libmq_go_source_declare(H(src), (char *)metric, (char *)metadata_json, timeout);
}

int mq_source_declare_many(mq_source *src, const char *metrics_json, double timeout) {
    GUARD_INT;
    return libmq_go_source_declare_many(H(src), (char *)metrics_json, timeout);
}

int mq_source_set_chunk_size(mq_source *src, const char *metric, int64_t chunk_size) {
    GUARD_INT;
    return libmq_stage_set_chunk_size(H(src), metric, chunk_size);
}

int mq_source_send(mq_source *src, const char *metric, int64_t time_ns, double value, double timeout) {
    GUARD_INT;
    return libmq_stage_send(H(src), metric, time_ns, value, timeout);
}

int mq_source_send_batch(mq_source *src, const char *metric, const int64_t *time_ns, const double *values,
                         size_t count, double timeout) {
    GUARD_INT;
    return libmq_stage_send_batch(H(src), metric, time_ns, values, count, timeout);
}

mq_metric *mq_source_metric(mq_source *src, const char *metric) {
    GUARD_NULL
    return (mq_metric *)libmq_stage_metric(H(src), metric);
}

int mq_metric_send(mq_metric *m, int64_t time_ns, double value, double timeout) {
    GUARD_INT;
    return libmq_stage_metric_send((uintptr_t)m, time_ns, value, timeout);
}

int mq_metric_send_batch(mq_metric *m, const int64_t *time_ns, const double *values, size_t n, double timeout) {
    GUARD_INT;
    return libmq_stage_metric_send_batch((uintptr_t)m, time_ns, values, n, timeout);
}

int mq_source_flush(mq_source *src, double timeout) {
    GUARD_INT;
    return libmq_stage_flush(H(src), timeout);
}

int mq_source_config(mq_source *src, char *buf, size_t size) {
    GUARD_INT;
    return libmq_go_source_config(H(src), buf, size);
}

int mq_source_stop(mq_source *src, double timeout) {
    GUARD_INT;
    return libmq_go_source_stop(H(src), timeout);
}

void mq_source_free(mq_source *src) {
    if (forked) return; /* the parent owns the source */
    libmq_stage_free(H(src));
}

int mq_source_set_config_handler(mq_source *src, mq_config_fn fn, void *user) {
    GUARD_INT;
    return libmq_go_source_set_config_handler(H(src), (uintptr_t)fn, (uintptr_t)user);
}

int mq_source_run_interval(mq_source *src, double period, mq_update_fn update, void *user) {
    GUARD_INT;
    return libmq_go_source_run_interval(H(src), period, (uintptr_t)update, (uintptr_t)user);
}

int mq_source_set_period(mq_source *src, double period) {
    GUARD_INT;
    return libmq_go_source_set_period(H(src), period);
}

int mq_source_stats(mq_source *src, mq_stats *stats, size_t size) {
    GUARD_INT;
    return libmq_stage_stats(H(src), stats, size);
}

void mq_set_log_handler(mq_log_fn fn, void *user) {
    if (forked) return;
    libmq_go_set_log_handler((uintptr_t)fn, (uintptr_t)user);
}

int mq_set_log_level(int level) {
    GUARD_INT;
    return libmq_go_set_log_level(level);
}

int mq_source_set_client_version(mq_source *src, const char *version) {
    GUARD_INT;
    return libmq_go_source_set_client_version(H(src), (char *)version);
}

int mq_source_set_reconnect_timeout(mq_source *src, double seconds) {
    GUARD_INT;
    return libmq_go_source_set_reconnect_timeout(H(src), seconds);
}

int mq_source_set_heartbeat(mq_source *src, double seconds) {
    GUARD_INT;
    return libmq_go_source_set_heartbeat(H(src), seconds);
}

int mq_source_wait(mq_source *src, double timeout) {
    GUARD_INT;
    return libmq_go_source_wait(H(src), timeout);
}
