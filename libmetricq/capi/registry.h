/* The registry of the C side (registry.c): for every source handle, its
   metrics' stages (stage.c), found by name or by metric handle. */
#ifndef LIBMETRICQ_REGISTRY_H
#define LIBMETRICQ_REGISTRY_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "capi_internal.h"
#include "metricq.h"

/* One metric's stage. A send by name or handle touches one cache line
   of it: the second (stages are 64-byte aligned), which holds the lock,
   the lease, the storage's addresses and the first 16 bytes of the name
   the lookup compares (longer names go on into the next line). The first
   line holds what only the slow paths and the registry use. The
   registry's part (id, older, follower, name) links and names it; the
   rest is stage.c's, under lock. */
typedef struct metric_stage {
    struct metric_stage *older; /* the source's list of all its stages, newest first */
    uintptr_t id;               /* its metric handle (0: none; see registry.c) */
    size_t capacity;            /* length of times and values */
    int held;                   /* the core may hold buffer space for this stage */
    int64_t slot_time;          /* room for one point without any allocation, so that */
    double slot_value;          /* a stage always works, out of memory too */

    _Alignas(64) uint32_t lock; /* stage_lock */
    uint8_t name_len;
    uint8_t has_after;
    struct metric_stage *follower; /* the stage sent to by name after this one, last time (registry.c) */
    uint32_t room;   /* points the lease still has room for (at most what stage.c asks for) */
    uint32_t n;      /* points staged */
    int64_t after;   /* the next point must be later (if has_after) */
    int64_t *times;  /* the one-point slot above, or memory of their own */
    double *values;
    char name[]; /* NUL-terminated */
} metric_stage;

/* Writes (under the stage's lock) of the fields that registry.c's
   fetch_ahead reads without it, for a prefetch: n, times and values.
   Relaxed atomic stores, so that those reads are no data race; on x86 and
   ARM plain stores all the same. */
#define STAGE_SET(field, value) __atomic_store_n(&(field), (value), __ATOMIC_RELAXED)

_Static_assert(MQ_MAX_NAME_LENGTH <= UINT8_MAX, "name_len holds every valid name's length");
_Static_assert(offsetof(metric_stage, name) - offsetof(metric_stage, lock) < 64, "a send's fields share a line");

/* Where a source finds a stage by name: open addressing, so that a lookup
   reads one slot (the hash tells a match apart without reading the stage)
   and then only the stage it is after. An empty slot has no stage. */
typedef struct stage_slot {
    uint64_t hash;
    metric_stage *stage;
} stage_slot;

/* A source's entry. Stages are only added (under the write lock) until
   the entry is destroyed, so a holder of a reference walks them through
   `newest` without any lock (EACH_STAGE). */
typedef struct source_entry {
    struct source_entry *next; /* in the registry's bucket */
    uintptr_t handle;
    int closed;  /* the source stopped taking points: stage nothing more */
    int freeing; /* mq_source_free owns the teardown */
    int done;    /* which ends are done with it (stage.c) */
    size_t metric_count;
    stage_slot *slots; /* at most half of them used */
    unsigned slot_bits; /* 1 << slot_bits slots */
    metric_stage **by_index; /* the stages with a metric handle, by index */
    size_t index_count, index_room;
    metric_stage *newest;
    struct stage_block *blocks; /* the memory of the stages (registry.c) */
    char *block_free;
    size_t block_left, block_bytes;
    pthread_mutex_t ref_mu;
    pthread_cond_t ref_cond;
    int refs;
} source_entry;

/* A stage's lock: one word in the stage's hot cache line instead of a
   pthread_mutex_t (40 bytes, which pushed the lease into a second line,
   and a call into libc each way). Free and taken by one atomic instruction
   each while nobody waits, which is nearly always (a metric's points
   mostly come from one thread; flush, stats, stop and reclaim take each
   stage briefly); a thread that finds it taken sleeps on the word (futex),
   as glibc's default mutex does. 0: free, 1: taken, 2: taken, and a
   thread may be asleep on it. */
LIBMQ_HIDDEN void stage_lock_wait(uint32_t *word);
LIBMQ_HIDDEN void stage_lock_wake(uint32_t *word);

static inline void stage_lock(metric_stage *m) {
    uint32_t free_word = 0;
    if (!__atomic_compare_exchange_n(&m->lock, &free_word, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        stage_lock_wait(&m->lock);
    }
}

static inline int stage_trylock(metric_stage *m) {
    uint32_t free_word = 0;
    return __atomic_compare_exchange_n(&m->lock, &free_word, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

static inline void stage_unlock(metric_stage *m) {
    if (__atomic_exchange_n(&m->lock, 0, __ATOMIC_RELEASE) == 2) stage_lock_wake(&m->lock);
}

#define EACH_STAGE(s, m) \
    for (metric_stage *m = __atomic_load_n(&(s)->newest, __ATOMIC_ACQUIRE); m != NULL; m = m->older)

/* The entry of a handle, with a reference that keeps it and its stages
   alive without any lock; NULL if it has none. */
LIBMQ_HIDDEN source_entry *registry_acquire(uintptr_t handle);
LIBMQ_HIDDEN void registry_hold(source_entry *s);
LIBMQ_HIDDEN void registry_release(source_entry *s);

/* The length of a name; 0 when it is NULL or longer than any valid name. */
LIBMQ_HIDDEN int registry_name_len(const char *name, size_t *len);

/* The stage of a metric, by name or by metric handle, locked (stage_lock),
   and its entry; NULL if there is none (*source: the entry, or NULL,
   also then). */
LIBMQ_HIDDEN metric_stage *registry_lock_name(uintptr_t handle, const char *name, size_t len,
                                              source_entry **source);
LIBMQ_HIDDEN metric_stage *registry_lock_id(uintptr_t id, source_entry **source);

/* The stage of that name in s; a new one (*added: locked, the registry's
   part set, all else zero, for the caller to fill and unlock) unless s is
   closed (for_handle: is being freed); NULL if none (also out of memory).
   The caller holds a reference to s. */
LIBMQ_HIDDEN metric_stage *registry_add(source_entry *s, const char *name, size_t len, int for_handle, int *added);

/* Closes s: from now on no stage is added to it for a send, and every
   stage added before is in its list. Returns whether it was closed
   already. */
LIBMQ_HIDDEN int registry_close(source_entry *s);

/* Unlinks s and waits until nobody else holds a reference (the caller
   gives up its own); then calls free_storage for every stage, after
   locking it once (a sender that found it before the unlink finishes
   first), and frees the stages and s. */
LIBMQ_HIDDEN void registry_destroy(source_entry *s, void (*free_storage)(metric_stage *));

#endif
