/* Internal helpers of the cgo layer, implemented in helpers.c. Only basic
   types here: this text is copied into cgo's generated export header, which
   must not see metricq.h (its prototypes say "const char *" where cgo's say
   "char *"). */
#ifndef LIBMETRICQ_CAPI_INTERNAL_H
#define LIBMETRICQ_CAPI_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define LIBMQ_HIDDEN __attribute__((visibility("hidden")))

/* Sets this thread's mq_last_error() to msg[0:n] (cut at 1023 bytes, on a
   UTF-8 boundary). */
LIBMQ_HIDDEN void libmq_set_error(const char *msg, size_t n);

/* Call user callbacks, and record on this thread which source's update or
   configuration hook is running, so that mq_source_stop and mq_source_free
   can tell they are called from inside it. */
LIBMQ_HIDDEN int libmq_call_update(uintptr_t fn, uintptr_t src, uintptr_t user);
LIBMQ_HIDDEN int libmq_call_config(uintptr_t fn, uintptr_t src, const char *json,
                                   uintptr_t user);
LIBMQ_HIDDEN void libmq_call_log(uintptr_t fn, int level, const char *msg, uintptr_t user);
LIBMQ_HIDDEN uintptr_t libmq_in_update(void);
LIBMQ_HIDDEN uintptr_t libmq_in_config(void);

/* Copies the counters (mq_stats field order) into out, at most size bytes. */
#define LIBMQ_STATS_FIELDS 18
LIBMQ_HIDDEN void libmq_fill_stats(void *out, size_t size, const uint64_t *values);

/* stage.c: a new source (registered before it connects, so that a stop
   of its first core is seen). */
LIBMQ_HIDDEN void libmq_stage_register(uintptr_t handle);
/* stage.c: forgets a source whose handle never reached the host. */
LIBMQ_HIDDEN void libmq_stage_unregister(uintptr_t handle);
/* stage.c: the source's core number `core` began to stop (perhaps on its
   own): hand staged points over while it still takes them, and stage no
   more for it. */
LIBMQ_HIDDEN void libmq_stage_close(uintptr_t handle, uint64_t core);

/* What the staging layer (stage.c) needs to know of a declared metric. */
typedef struct libmq_metric_state {
    int64_t chunk_size;   /* 0: flushed by hand */
    int64_t open;         /* points in the core's open chunk */
    int64_t last;         /* last accepted timestamp, if has_last */
    int64_t max_buffered; /* the source's buffer bound */
    int has_last;
} libmq_metric_state;

#endif
