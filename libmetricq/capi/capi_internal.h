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

/* registry.c: a new source (before it connects). */
LIBMQ_HIDDEN void libmq_registry_add(uintptr_t handle);
/* stage.c: forgets a source whose handle never reached the host, after
   its stop. */
LIBMQ_HIDDEN void libmq_stage_forget(uintptr_t handle);

/* The core's answer to a stage's hand-over (libmetricq.Source.HandOver):
   whether it took the staged points, and the metric's next lease. */
typedef struct libmq_lease {
    int64_t room;  /* points the stage may hold; their buffer space is reserved */
    int64_t after; /* the next point must be later, if has_after */
    int has_after;
    int taken;
} libmq_lease;

/* What the stages of a stopped source still held. */
typedef struct libmq_staged {
    const char *metric;
    int64_t *times;
    double *values;
    size_t count;
} libmq_staged;
typedef struct libmq_staged_list {
    void *source;
    libmq_staged *batches;
    size_t count;
} libmq_staged_list;

/* stage.c, the one call from Go into the stage: the source stopped taking
   points. Closes its stages and returns what they hold (NULL: nothing),
   for the core to take; then give it back with libmq_stage_collected. */
LIBMQ_HIDDEN libmq_staged_list *libmq_stage_close(uintptr_t handle);
LIBMQ_HIDDEN void libmq_stage_collected(libmq_staged_list *list);

#endif
