/* The registry of the C side (registry.c): for every source handle, its
   metrics' stages (stage.c), found by name or by metric handle. */
#ifndef LIBMETRICQ_REGISTRY_H
#define LIBMETRICQ_REGISTRY_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "capi_internal.h"

/* One metric's stage. The registry's part links and names it; the rest is
   stage.c's, under mu. */
typedef struct metric_stage {
    struct metric_stage *next;  /* in the source's bucket */
    struct metric_stage *older; /* the source's list of all its stages, newest first */
    uint64_t hash;
    uintptr_t id; /* its metric handle (0: none; see registry.c) */
    pthread_mutex_t mu;
    size_t room;     /* points the lease still has room for */
    size_t n;        /* points staged */
    size_t capacity; /* length of times and values */
    int64_t after;   /* the next point must be later (if has_after) */
    int has_after;
    int held; /* the core may hold buffer space for this stage */
    int64_t *times; /* the one-point slot below, or memory of their own */
    double *values;
    int64_t slot_time; /* room for one point without any allocation, so that */
    double slot_value; /* a stage always works, out of memory too */
    size_t name_len;
    char name[]; /* NUL-terminated */
} metric_stage;

/* A source's entry. Stages are only added (under the write lock) until
   the entry is destroyed, so a holder of a reference walks them through
   `newest` without any lock (EACH_STAGE). */
typedef struct source_entry {
    struct source_entry *next; /* in the registry's bucket */
    uintptr_t handle;
    int closed;  /* the source stopped taking points: stage nothing more */
    int freeing; /* mq_source_free owns the teardown */
    int done;    /* which ends are done with it (stage.c) */
    size_t metric_count, bucket_count;
    metric_stage **buckets;
    metric_stage **by_index; /* the stages with a metric handle, by index */
    size_t index_count, index_room;
    metric_stage *newest;
    pthread_mutex_t ref_mu;
    pthread_cond_t ref_cond;
    int refs;
} source_entry;

#define EACH_STAGE(s, m) \
    for (metric_stage *m = __atomic_load_n(&(s)->newest, __ATOMIC_ACQUIRE); m != NULL; m = m->older)

/* The entry of a handle, with a reference that keeps it and its stages
   alive without any lock; NULL if it has none. */
LIBMQ_HIDDEN source_entry *registry_acquire(uintptr_t handle);
LIBMQ_HIDDEN void registry_hold(source_entry *s);
LIBMQ_HIDDEN void registry_release(source_entry *s);

/* FNV-1a of a name and its length; 0 when it is longer than any valid
   name. */
LIBMQ_HIDDEN int registry_hash(const char *name, size_t *len, uint64_t *hash);

/* The stage of a metric, by name or by metric handle, locked (its mu),
   and its entry; NULL if there is none (*source: the entry, or NULL,
   also then). */
LIBMQ_HIDDEN metric_stage *registry_lock_name(uintptr_t handle, const char *name, size_t len, uint64_t hash,
                                              source_entry **source);
LIBMQ_HIDDEN metric_stage *registry_lock_id(uintptr_t id, source_entry **source);

/* Adds m to s unless s has a stage of that name or is closed (for_handle:
   is being freed); returns the stage now in s (m or the one found), NULL
   if none. The caller holds a reference to s, and frees m if it is not
   the one returned. */
LIBMQ_HIDDEN metric_stage *registry_insert(source_entry *s, metric_stage *m, int for_handle);

/* Closes s: from now on no stage is added to it for a send, and every
   stage added before is in its list. Returns whether it was closed
   already. */
LIBMQ_HIDDEN int registry_close(source_entry *s);

/* Unlinks s and waits until nobody else holds a reference (the caller
   gives up its own); then calls free_stage for every stage, after locking
   it once (a sender that found it before the unlink finishes first), and
   frees s. */
LIBMQ_HIDDEN void registry_destroy(source_entry *s, void (*free_stage)(metric_stage *));

#endif
