/* The C side of the cgo layer: the thread-local error text, the functions
   that need no Go (mq_strerror, mq_last_error, mq_now) and trampolines for
   calling the host's function pointers. Including metricq.h here makes the
   compiler check these definitions against the public header. */
#include <string.h>
#include <time.h>

#include "metricq.h"
#include "capi_internal.h"

_Static_assert(sizeof(mq_stats) == LIBMQ_STATS_FIELDS * sizeof(uint64_t),
               "mq_stats and LIBMQ_STATS_FIELDS disagree");

enum { LAST_ERROR_CAP = 1024 };

static __thread char last_error[LAST_ERROR_CAP];
static __thread uintptr_t running_update; /* handle whose update runs on this thread */
static __thread uintptr_t running_config; /* handle whose config hook runs here      */

void libmq_set_error(const char *msg, size_t n) {
    if (msg == NULL) {
        n = 0;
    }
    if (n >= LAST_ERROR_CAP) {
        n = LAST_ERROR_CAP - 1;
        /* Do not cut a UTF-8 sequence: back up to the start of the one that
           would be split. */
        while (n > 0 && ((unsigned char)msg[n] & 0xC0) == 0x80) {
            n--;
        }
    }
    if (n > 0) {
        memcpy(last_error, msg, n);
    }
    last_error[n] = '\0';
}

const char *mq_last_error(void) { return last_error; }

const char *mq_strerror(int status) {
    switch (status) {
    case MQ_OK:             return "success";
    case MQ_ERR_INVALID:    return "invalid argument";
    case MQ_ERR_TIMEOUT:    return "timed out";
    case MQ_ERR_CONNECT:    return "connection failed";
    case MQ_ERR_RPC:        return "manager replied with an error";
    case MQ_ERR_UNDECLARED: return "metric not declared";
    case MQ_ERR_ORDER:      return "timestamp not strictly increasing";
    case MQ_ERR_PUBLISH:    return "publish failed";
    case MQ_ERR_STOPPED:    return "source stopped";
    case MQ_ERR_INTERNAL:   return "internal error";
    default:                return "unknown status";
    }
}

int64_t mq_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + (int64_t)ts.tv_nsec;
}

int libmq_call_update(uintptr_t fn, uintptr_t src, uintptr_t user) {
    uintptr_t saved = running_update;
    running_update = src;
    int r = ((mq_update_fn)fn)((mq_source *)src, (void *)user);
    running_update = saved;
    return r;
}

int libmq_call_config(uintptr_t fn, uintptr_t src, const char *json, uintptr_t user) {
    uintptr_t saved = running_config;
    running_config = src;
    int r = ((mq_config_fn)fn)((mq_source *)src, json, (void *)user);
    running_config = saved;
    return r;
}

void libmq_call_log(uintptr_t fn, int level, const char *msg, uintptr_t user) {
    ((mq_log_fn)fn)(level, msg, (void *)user);
}

uintptr_t libmq_in_update(void) { return running_update; }
uintptr_t libmq_in_config(void) { return running_config; }

void libmq_fill_stats(void *out, size_t size, const uint64_t *values) {
    size_t n = LIBMQ_STATS_FIELDS * sizeof(uint64_t);
    memcpy(out, values, size < n ? size : n);
}
