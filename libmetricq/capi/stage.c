/* Staging: mq_source_send's points wait here, in C, and cross into Go a
   batch at a time.

   Why: a call from a C thread into Go costs 100-135 ns on its own (the cgo
   transition), more than everything else a point needs. Staged, a point
   costs a hash of its name, a reader slot, a mutex and a few stores; a
   fill crosses into Go once (SendBatchReserved, which chunks it exactly as
   single sends would have been chunked, and reserves the space of the
   next fill in the same call), plus a reservation now and then.

   What a staged point is: accepted. MQ_OK was returned, so it must reach
   the broker without the caller doing more: mq_source_flush,
   mq_source_free and mq_source_set_chunk_size hand staged points over
   before doing their work, and the core's stop (mq_source_stop, or the
   source stopping on its own) calls back before it stops taking points;
   and a stage never holds more than the metric's chunk still lacks, so a
   chunk is sealed at the point that fills it, as without staging. At most
   STAGE_MAX points per metric wait here, and each has its space in the
   core's bounded buffer reserved before it is staged: the bound counts
   staged points, and a sender that finds the buffer full waits (without
   holding the stage) as it would without staging.

   The stage is only an accelerator: whenever it cannot take a point (no
   stage for the handle or the metric, a source not connected or stopping,
   bad arguments) the point goes straight to Go. Every error text comes
   from Go, the order rule's too (libmq_go_stage_order_error). While a
   source is open, every point of a metric that has a stage passes
   through the stage's mutex, so the stage and the core agree on the
   metric's last timestamp and its points stay in order; once a stop
   began, points go to Go directly, after the staged ones.

   Locking: the registry lock (read_lock/write_lock) guards the tables of
   sources and metrics; a metric's mutex guards its stage. A sender locks
   the metric's mutex while it still holds the registry lock for reading,
   and only then lets it go: mq_source_free, having unlinked the source
   under the write lock, locks every metric's mutex once more before
   freeing, and so waits for every sender that found the source. Long
   operations (drain, stats, a sender waiting for space) hold a reference
   instead, which mq_source_free also waits for, and walk the source's
   list of stages without any lock. Nothing that may wait runs under a
   metric's mutex (wait_for_space lets it go; after a stop began, the
   point goes to Go after the mutex is let go: close_stage). */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "metricq.h"
#include "capi_internal.h"
#include "stage.h"
#include "_cgo_export.h"

/* Points a metric may stage: enough that the cgo transition is paid once
   per STAGE_MAX points (well below a nanosecond each), small enough that a
   host with thousands of metrics stages little memory (8 KiB a metric). */
enum { STAGE_MAX = 512 };

/* Buffer space is reserved this many points at a time: one crossing into
   Go per RESERVE_STEP points, and at most this much reserved but unused
   per metric. With a small buffer bound, at most 1/RESERVE_SHARE of it
   per metric, so that space reserved ahead of use by idle metrics leaves
   room for the others (a waiting sender also takes back what idle stages
   hold when it starts waiting: reclaim). */
enum { RESERVE_STEP = 128, RESERVE_SHARE = 64 };

typedef struct metric_stage {
    struct metric_stage *next;  /* in the source's bucket */
    struct metric_stage *older; /* the source's list of all its stages, newest first */
    pthread_mutex_t mu;
    uint64_t hash;
    uint64_t generation;  /* the source's generation when the facts below were read */
    int64_t chunk_size;   /* 0: flushed by hand */
    int64_t core_open;    /* points in the core's open chunk (as far as this stage knows) */
    int64_t max_buffered; /* the source's buffer bound */
    int64_t last;         /* last accepted timestamp, staged or handed over */
    int has_last;
    size_t target; /* hand over when this many are staged (>= 1) */
    size_t n;      /* staged */
    /* Points this stage accepted (staged, or batches it handed over): the
       core does not count what it gets from a stage, so that the sum stays
       monotonic. Written under mu (a plain store, no locked add), read
       without it by stats. */
    uint64_t accepted;
    int64_t reserved; /* buffer space held for staged and coming points (>= n) */
    size_t room;   /* length of times and values */
    int64_t *times; /* the one-point slot below, or memory of their own */
    double *values;
    int64_t slot_time; /* room for one point without any allocation, so that */
    double slot_value; /* a stage always works, out of memory too */
    uintptr_t id; /* its mq_metric handle (0: none; see metric_id) */
    size_t name_len;
    char name[]; /* NUL-terminated */
} metric_stage;

typedef struct source_stage {
    struct source_stage *next; /* in the registry's bucket */
    uintptr_t handle;
    /* Bumped when the core's facts may have changed (a flush, a
       declaration, a chunk size set, a connect). 64 bits: a 32-bit count wraps to 0 after 2^32 flushes,
       and a new stage (generation 0, no memory yet) would then pass for
       current and store into a NULL array. */
    uint64_t generation;
    /* The stage is open (takes points) while the source's current core
       is connected and has not begun to stop: core is the sequence
       number of the core whose connect succeeded last (0: none yet),
       closed_core the highest one that began to stop, and closed is set
       by mq_source_free. Points are thus only staged for a connected
       core, and a core that stops late (its connect was abandoned)
       cannot close the stage of its successor. */
    uint64_t core;
    uint64_t closed_core;
    int closed;
    int freeing;         /* mq_source_free owns the teardown */
    uint64_t dropped;    /* staged points a stop could not hand over */
    size_t metric_count, bucket_count;
    metric_stage **buckets;
    metric_stage **by_index; /* the stages with a metric handle, by index */
    size_t index_count, index_room;
    metric_stage *newest; /* head of the list through older: stages are only
                             added (under the write lock) until destroy, so
                             it is walked with a reference and no lock */
    pthread_mutex_t ref_mu;
    pthread_cond_t ref_cond;
    int refs;
} source_stage;

enum { SOURCE_BUCKETS = 64 };

/* A metric handle (mq_metric *) is an integer, never an address, so that
   a stale, foreign or made-up one is simply not found and never read
   through: the source's handle in the high bits, 1 + the stage's index in
   the source's by_index in the low INDEX_BITS. Go never reuses a source
   handle, so a handle of a freed source stays invalid for good. */
enum { INDEX_BITS = sizeof(uintptr_t) >= 8 ? 24 : 12 };
#define INDEX_MASK (((uintptr_t)1 << INDEX_BITS) - 1)

/* The registry lock, a reader-writer lock built for a read side taken on
   every point from many threads at once and a write side taken a few times
   per source. A pthread rwlock counts its readers in one shared word, which
   then bounces between the cores on every point (with 4 sending threads on
   2 cores that cost more than the rest of the stage). Here each thread
   counts in a slot of its own cache line; a writer raises `writer` and
   waits until every slot is empty. Both sides use sequentially consistent
   operations, so a reader and a writer that start together cannot both
   miss each other. Not recursive; nothing here takes it twice. */
enum { READER_SLOTS = 64 };
static struct {
    int count;
    char pad[64 - sizeof(int)];
} readers[READER_SLOTS] __attribute__((aligned(64)));
static int writer;
static pthread_mutex_t writers = PTHREAD_MUTEX_INITIALIZER;
static __thread int reader_slot = -1;

static int *my_reader_count(void) {
    if (reader_slot < 0) {
        static unsigned next_slot;
        reader_slot = (int)(__atomic_fetch_add(&next_slot, 1, __ATOMIC_RELAXED) % READER_SLOTS);
    }
    return &readers[reader_slot].count;
}

static void read_lock(void) {
    int *count = my_reader_count();
    for (;;) {
        __atomic_add_fetch(count, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&writer, __ATOMIC_SEQ_CST)) return;
        __atomic_sub_fetch(count, 1, __ATOMIC_SEQ_CST);
        while (__atomic_load_n(&writer, __ATOMIC_SEQ_CST)) sched_yield();
    }
}

static void read_unlock(void) { __atomic_sub_fetch(my_reader_count(), 1, __ATOMIC_RELEASE); }

static void write_lock(void) {
    pthread_mutex_lock(&writers);
    __atomic_store_n(&writer, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < READER_SLOTS; i++) {
        while (__atomic_load_n(&readers[i].count, __ATOMIC_SEQ_CST) != 0) sched_yield();
    }
}

static void write_unlock(void) {
    __atomic_store_n(&writer, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&writers);
}
static source_stage *sources[SOURCE_BUCKETS];

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static int timeout_ok(double timeout) { return timeout > 0 && !isinf(timeout); }

/* FNV-1a of the name and its length; 0 when it is longer than any valid
   name (the direct path then says so). */
static int name_hash(const char *name, size_t *len, uint64_t *hash) {
    uint64_t h = 14695981039346656037ull;
    size_t i = 0;
    for (; name[i] != '\0'; i++) {
        if (i >= MQ_MAX_NAME_LENGTH) return 0;
        h = (h ^ (unsigned char)name[i]) * 1099511628211ull;
    }
    *len = i;
    *hash = h;
    return 1;
}

static source_stage **source_slot(uintptr_t handle) {
    source_stage **p = &sources[handle % SOURCE_BUCKETS];
    while (*p != NULL && (*p)->handle != handle) p = &(*p)->next;
    return p;
}

static metric_stage *find_metric(source_stage *s, const char *name, size_t len, uint64_t hash) {
    for (metric_stage *m = s->buckets[hash & (s->bucket_count - 1)]; m != NULL; m = m->next) {
        if (m->hash == hash && m->name_len == len && memcmp(m->name, name, len) == 0) return m;
    }
    return NULL;
}

/* Under the write lock: gives m the next metric handle of s, if memory
   and the handle's bits allow (otherwise m is only found by name). */
static void give_id(source_stage *s, metric_stage *m) {
    if (s->index_count >= INDEX_MASK || s->handle > (UINTPTR_MAX >> INDEX_BITS)) return;
    if (s->index_count == s->index_room) {
        size_t room = s->index_room == 0 ? 16 : s->index_room * 2;
        metric_stage **grown = realloc(s->by_index, room * sizeof *grown);
        if (grown == NULL) return;
        s->by_index = grown;
        s->index_room = room;
    }
    s->by_index[s->index_count++] = m;
    m->id = s->handle << INDEX_BITS | s->index_count;
}

/* Under the write lock. */
static void insert_metric(source_stage *s, metric_stage *m) {
    if (s->metric_count >= s->bucket_count) {
        size_t count = s->bucket_count * 2;
        metric_stage **buckets = calloc(count, sizeof *buckets);
        if (buckets != NULL) { /* otherwise the chains just grow longer */
            for (size_t i = 0; i < s->bucket_count; i++) {
                for (metric_stage *e = s->buckets[i], *next; e != NULL; e = next) {
                    next = e->next;
                    e->next = buckets[e->hash & (count - 1)];
                    buckets[e->hash & (count - 1)] = e;
                }
            }
            free(s->buckets);
            s->buckets = buckets;
            s->bucket_count = count;
        }
    }
    m->next = s->buckets[m->hash & (s->bucket_count - 1)];
    s->buckets[m->hash & (s->bucket_count - 1)] = m;
    s->metric_count++;
    give_id(s, m);
    m->older = s->newest;
    STORE(&s->newest, m);
}

void libmq_stage_register(uintptr_t handle) {
    source_stage *s = calloc(1, sizeof *s);
    if (s == NULL) return; /* the source works unstaged */
    s->bucket_count = 16;
    s->buckets = calloc(s->bucket_count, sizeof *s->buckets);
    if (s->buckets == NULL) {
        free(s);
        return;
    }
    s->handle = handle;
    s->generation = 1; /* a new metric stage's 0 is stale */
    pthread_mutex_init(&s->ref_mu, NULL);
    pthread_cond_init(&s->ref_cond, NULL);
    write_lock();
    source_stage **slot = source_slot(handle);
    if (*slot == NULL) {
        *slot = s;
        s = NULL;
    }
    write_unlock();
    if (s != NULL) { /* cannot happen: Go never reuses a handle */
        free(s->buckets);
        free(s);
    }
}

/* A reference keeps the source's stages alive without the registry lock
   (mq_source_free waits for every reference to go): what lets a sender
   drop the stage's mutex while it waits for buffer space. */
static void hold_source(source_stage *s) {
    pthread_mutex_lock(&s->ref_mu);
    s->refs++;
    pthread_mutex_unlock(&s->ref_mu);
}

/* The source of a handle, with a reference; NULL if it has none. */
static source_stage *acquire_source(uintptr_t handle) {
    read_lock();
    source_stage *s = *source_slot(handle);
    if (s != NULL) hold_source(s);
    read_unlock();
    return s;
}

static void release_source(source_stage *s) {
    pthread_mutex_lock(&s->ref_mu);
    if (--s->refs == 0) pthread_cond_broadcast(&s->ref_cond);
    pthread_mutex_unlock(&s->ref_mu);
}

/* Visits the source's metrics. The caller holds a reference (stages live
   until destroy) and no lock: a stage added meanwhile may be missed, and
   has nothing of interest yet. */
#define EACH_METRIC(s, m) for (metric_stage *m = LOAD(&(s)->newest); m != NULL; m = m->older)

static int is_open(source_stage *s) {
    return !LOAD(&s->closed) && LOAD(&s->core) > LOAD(&s->closed_core);
}

/* How many points to stage before handing over when the core's open
   chunk holds core_open: never more than the chunk lacks. */
static int64_t fill_target(const metric_stage *m, int64_t core_open) {
    int64_t target = STAGE_MAX;
    if (m->chunk_size > 0 && m->chunk_size - core_open < target) target = m->chunk_size - core_open;
    if (m->max_buffered < target) target = m->max_buffered;
    return target < 1 ? 1 : target;
}

/* How much buffer space to reserve at a time. */
static int64_t reserve_step(const metric_stage *m) {
    int64_t step = m->max_buffered / RESERVE_SHARE;
    return step < 1 ? 1 : step > RESERVE_STEP ? RESERVE_STEP : step;
}

/* Under m->mu, with nothing staged: the target of the next fill, and the
   room for it. */
static void retarget(metric_stage *m) {
    int64_t target = fill_target(m, m->core_open);
    if ((size_t)target > m->room) {
        int64_t *times = malloc((size_t)target * sizeof *times);
        double *values = malloc((size_t)target * sizeof *values);
        if (times != NULL && values != NULL) {
            if (m->times != &m->slot_time) {
                free(m->times);
                free(m->values);
            }
            m->times = times;
            m->values = values;
            m->room = (size_t)target;
        } else { /* stage what fits until memory returns */
            free(times);
            free(values);
            target = (int64_t)m->room;
        }
    }
    m->target = (size_t)target;
}

/* The core's open chunk after it took count more points. */
static int64_t open_after(const metric_stage *m, int64_t count) {
    return m->chunk_size > 0 ? (m->core_open + count) % m->chunk_size : m->core_open + count;
}

/* Under m->mu: records points the core has accepted. */
static void accepted_by_core(metric_stage *m, int64_t count, int64_t last) {
    m->core_open = open_after(m, count);
    m->last = last;
    m->has_last = 1;
}

/* Under m->mu: hands the staged points to the core. Their space is
   reserved, so this never waits; it fails only when the source stopped,
   and the points then stay staged. With top_up, the same call reserves
   the space of the next fill (as far as it is free): a sender then
   crosses into Go once per fill, also at chunk size 1. */
static int handover(uintptr_t handle, metric_stage *m, int top_up) {
    if (m->n == 0) return MQ_OK;
    int64_t n = (int64_t)m->n, more = 0;
    if (top_up) {
        int64_t next = fill_target(m, open_after(m, n));
        more = (next < reserve_step(m) ? next : reserve_step(m)) - (m->reserved - n);
        if (more < 0) more = 0;
    }
    int64_t got = libmq_go_stage_handover(handle, m->name, m->times, m->values, (size_t)n, more);
    if (got < 0) return (int)got;
    accepted_by_core(m, n, m->times[n - 1]);
    m->reserved += got - n;
    m->n = 0;
    retarget(m);
    return MQ_OK;
}

/* Under m->mu: gives back reserved space no staged point uses. */
static void unreserve(uintptr_t handle, metric_stage *m) {
    if (m->reserved > (int64_t)m->n) {
        libmq_go_stage_unreserve(handle, m->reserved - (int64_t)m->n);
        m->reserved = (int64_t)m->n;
    }
}

/* Takes the core's facts, read at the source's generation, and sizes the
   next fill by them. */
static void apply_state(metric_stage *m, const libmq_metric_state *state, uint64_t generation) {
    m->chunk_size = state->chunk_size;
    m->core_open = state->open;
    m->max_buffered = state->max_buffered;
    m->last = state->last;
    m->has_last = state->has_last;
    m->generation = generation;
    retarget(m);
}

/* Under m->mu: reads the core's facts again after something may have
   changed them (a flush sealed the open chunk, a chunk size was set). */
static int refresh(uintptr_t handle, source_stage *s, metric_stage *m) {
    uint64_t generation = LOAD(&s->generation);
    int status = handover(handle, m, 0);
    if (status != MQ_OK) return status;
    libmq_metric_state state;
    status = libmq_go_stage_state(handle, m->name, &state);
    if (status == MQ_OK) apply_state(m, &state, generation);
    return status;
}

static void free_stage(metric_stage *m) {
    if (m->times != &m->slot_time) {
        free(m->times);
        free(m->values);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* Creates the metric's stage, from the core's facts as read now: for a
   send only if the core has the metric declared (otherwise the send goes
   to Go, which says why), for a metric handle in any case (a stage
   without facts reads them at its first point). Returns the metric's
   stage, or NULL. The caller holds a reference to s, which keeps the
   stage alive. */
static metric_stage *add_metric(uintptr_t handle, source_stage *s, const char *name, size_t len, uint64_t hash,
                                int for_handle) {
    uint64_t generation = LOAD(&s->generation);
    libmq_metric_state state;
    int known = libmq_go_stage_state(handle, (char *)name, &state) == MQ_OK;
    if (!known && !for_handle) return NULL;
    metric_stage *m = calloc(1, sizeof *m + len + 1);
    if (m != NULL) {
        pthread_mutex_init(&m->mu, NULL);
        m->hash = hash;
        m->name_len = len;
        memcpy(m->name, name, len + 1);
        m->times = &m->slot_time;
        m->values = &m->slot_value;
        m->room = 1;
        if (known) apply_state(m, &state, generation); /* otherwise generation 0: never current */
    }
    write_lock();
    metric_stage *found = find_metric(s, name, len, hash);
    int added = found == NULL && m != NULL && (for_handle ? !LOAD(&s->closed) : is_open(s));
    if (added) {
        insert_metric(s, m);
        found = m;
    }
    write_unlock();
    if (!added && m != NULL) free_stage(m);
    return found;
}

/* Returns the metric's stage, locked, and its source; NULL when the call
   should go straight to Go. */
static metric_stage *lock_metric(uintptr_t handle, const char *name, source_stage **source) {
    size_t len;
    uint64_t hash;
    if (name == NULL || !name_hash(name, &len, &hash)) return NULL;
    for (int attempt = 0;; attempt++) {
        read_lock();
        source_stage *s = *source_slot(handle);
        metric_stage *m = s == NULL ? NULL : find_metric(s, name, len, hash);
        if (m != NULL) {
            pthread_mutex_lock(&m->mu);
            read_unlock();
            *source = s;
            return m;
        }
        if (s == NULL || attempt > 0) {
            read_unlock();
            return NULL;
        }
        hold_source(s); /* add_metric uses s without the read lock */
        read_unlock();
        int has_stage = add_metric(handle, s, name, len, hash, 0) != NULL;
        release_source(s);
        if (!has_stage) return NULL;
    }
}

/* Gives back the space metrics reserved but hold no point in, so that a
   sender that found the buffer full waits only for space that points
   really use. Skips stages busy right now: their space is about to be
   used. The caller holds a reference and no stage's mutex. */
static void reclaim(source_stage *s) {
    EACH_METRIC(s, m) {
        if (pthread_mutex_trylock(&m->mu) == 0) {
            unreserve(s->handle, m);
            pthread_mutex_unlock(&m->mu);
        }
    }
}

/* Under m->mu, which it drops while it waits: the buffer is full, so
   space for n points is reserved waiting up to timeout, without holding
   the stage, so that a flush or a stop can take it meanwhile. Returns n,
   or a negative status. */
static int64_t wait_for_space(uintptr_t handle, source_stage *s, metric_stage *m, int64_t n, double timeout) {
    hold_source(s);
    pthread_mutex_unlock(&m->mu);
    reclaim(s);
    int64_t got = libmq_go_stage_reserve(handle, m->name, n, timeout, 1);
    pthread_mutex_lock(&m->mu);
    release_source(s);
    return got;
}

/* What stage_point and the batch path return when a stop began: the
   stage is empty and takes nothing more, and the caller sends straight to
   Go once it has let the stage's mutex go. */
enum { SEND_DIRECT = 1 };

/* Under m->mu, once a stop began: staged points go first, to keep the
   order, and the space reserved for points to come goes back. Nothing
   else would give that space back: a sender that waited for space while
   the stop drained this stage comes back holding a reservation, and
   buffered_points would never return to 0. Returns SEND_DIRECT, or the
   handover's failure.

   The point itself is sent after the mutex is let go: that send may wait
   for buffer space, and mq_source_free, which closes the stage before it
   stops the source (the stop is what ends such waits), would wait for the
   mutex in its drain for the sender's whole timeout. Nothing is staged
   any more, so the mutex keeps no order there. */
static int close_stage(uintptr_t handle, metric_stage *m) {
    int status = handover(handle, m, 0);
    unreserve(handle, m);
    return status == MQ_OK ? SEND_DIRECT : status;
}

/* Under m->mu (which it may drop and take again while it waits for
   buffer space). */
static int stage_point(uintptr_t handle, source_stage *s, metric_stage *m, int64_t time_ns, double value,
                       double timeout) {
    for (;;) {
        if (!is_open(s)) return close_stage(handle, m);
        if (m->generation != LOAD(&s->generation)) {
            int status = refresh(handle, s, m);
            if (status != MQ_OK) return status;
        }
        if (m->has_last && time_ns <= m->last) {
            return libmq_go_stage_order_error(handle, m->name, time_ns, m->last);
        }
        if (m->reserved > (int64_t)m->n) break;
        int64_t want = (int64_t)m->target - (int64_t)m->n;
        want = want > reserve_step(m) ? reserve_step(m) : want < 1 ? 1 : want;
        int64_t got = libmq_go_stage_reserve(handle, m->name, want, timeout, 0);
        if (got < 0) return (int)got;
        if (got > 0) {
            m->reserved += got;
            break;
        }
        got = wait_for_space(handle, s, m, 1, timeout);
        if (got < 0) return (int)got;
        m->reserved += got;
    }
    m->times[m->n] = time_ns;
    m->values[m->n] = value;
    m->n++;
    if (m->n >= m->target) {
        int status = handover(handle, m, 1); /* records last */
        if (status != MQ_OK) { /* this point is refused; the earlier ones stay staged */
            m->n--;
            return status;
        }
    } else {
        m->last = time_ns;
        m->has_last = 1;
    }
    STORE(&m->accepted, m->accepted + 1);
    return MQ_OK;
}

/* Under m->mu, which it lets go: when the point or batch goes to Go
   directly (SEND_DIRECT), it goes under a copy of m's name, since m may
   be freed once the mutex is let go. */
static void unlock_metric(metric_stage *m, int status, char name[MQ_MAX_NAME_LENGTH + 1]) {
    if (status == SEND_DIRECT) memcpy(name, m->name, m->name_len + 1);
    pthread_mutex_unlock(&m->mu);
}

/* Under m->mu, which it lets go. */
static int send_point(uintptr_t handle, source_stage *s, metric_stage *m, int64_t time_ns, double value,
                      double timeout) {
    int status = timeout_ok(timeout) ? stage_point(handle, s, m, time_ns, value, timeout) : SEND_DIRECT;
    char name[MQ_MAX_NAME_LENGTH + 1];
    unlock_metric(m, status, name);
    if (status == SEND_DIRECT) return libmq_go_source_send(handle, name, time_ns, value, timeout);
    return status;
}

/* Under m->mu, which it lets go. */
static int send_batch(uintptr_t handle, source_stage *s, metric_stage *m, const int64_t *time_ns,
                      const double *values, size_t count, double timeout) {
    int status = SEND_DIRECT; /* bad arguments: Go says what is wrong, or takes an empty batch */
    if (timeout_ok(timeout) && count > 0 && count <= (size_t)INT64_MAX && time_ns != NULL && values != NULL) {
        status = is_open(s) && m->generation != LOAD(&s->generation) ? refresh(handle, s, m) : MQ_OK;
    }
    if (status == MQ_OK && !is_open(s)) {
        status = close_stage(handle, m);
    } else if (status == MQ_OK && (int64_t)count > m->max_buffered) {
        status = SEND_DIRECT; /* no buffer of this source holds it: Go says so */
    } else if (status == MQ_OK) {
        /* Space first: all of it, or waiting without holding the stage. */
        int64_t got = libmq_go_stage_reserve(handle, m->name, (int64_t)count, timeout, 0);
        if (got >= 0 && got < (int64_t)count) {
            if (got > 0) libmq_go_stage_unreserve(handle, got);
            got = wait_for_space(handle, s, m, (int64_t)count, timeout);
        }
        status = got < 0 ? (int)got : handover(handle, m, 0); /* staged points go first */
        if (status == MQ_OK) {
            int64_t taken = libmq_go_stage_handover(handle, m->name, (int64_t *)time_ns, (double *)values, count, 0);
            status = taken < 0 ? (int)taken : MQ_OK;
        }
        if (status != MQ_OK && got > 0) libmq_go_stage_unreserve(handle, got);
    }
    if (status == MQ_OK) {
        accepted_by_core(m, (int64_t)count, time_ns[count - 1]);
        STORE(&m->accepted, m->accepted + count);
        retarget(m);
    }
    char name[MQ_MAX_NAME_LENGTH + 1];
    unlock_metric(m, status, name);
    if (status == SEND_DIRECT) {
        return libmq_go_source_send_batch(handle, name, (int64_t *)time_ns, (double *)values, count, timeout);
    }
    return status;
}

int libmq_stage_send(uintptr_t handle, const char *metric, int64_t time_ns, double value, double timeout) {
    source_stage *s;
    metric_stage *m = timeout_ok(timeout) ? lock_metric(handle, metric, &s) : NULL;
    if (m == NULL) return libmq_go_source_send(handle, (char *)metric, time_ns, value, timeout);
    return send_point(handle, s, m, time_ns, value, timeout);
}

int libmq_stage_send_batch(uintptr_t handle, const char *metric, const int64_t *time_ns, const double *values,
                           size_t count, double timeout) {
    source_stage *s;
    metric_stage *m = NULL;
    if (timeout_ok(timeout) && count > 0 && count <= (size_t)INT64_MAX && time_ns != NULL && values != NULL) {
        m = lock_metric(handle, metric, &s);
    }
    if (m == NULL) {
        return libmq_go_source_send_batch(handle, (char *)metric, (int64_t *)time_ns, (double *)values, count,
                                          timeout);
    }
    return send_batch(handle, s, m, time_ns, values, count, timeout);
}

static const char bad_metric_text[] =
    "invalid metric handle (NULL, of a source already freed, or not made by mq_source_metric)";

/* Returns the stage of a metric handle, locked, and its source; NULL
   (with mq_last_error set) for anything that is not a live handle. */
static metric_stage *lock_handle(uintptr_t id, source_stage **source) {
    uintptr_t index = id & INDEX_MASK;
    metric_stage *m = NULL;
    if (index != 0) {
        read_lock();
        source_stage *s = *source_slot(id >> INDEX_BITS);
        if (s != NULL && index <= s->index_count) {
            m = s->by_index[index - 1];
            pthread_mutex_lock(&m->mu);
            *source = s;
        }
        read_unlock();
    }
    if (m == NULL) libmq_set_error(bad_metric_text, sizeof bad_metric_text - 1);
    return m;
}

uintptr_t libmq_stage_metric(uintptr_t handle, const char *name) {
    if (libmq_go_stage_check_name(handle, (char *)name) != MQ_OK) return 0;
    size_t len;
    uint64_t hash;
    source_stage *s = name_hash(name, &len, &hash) ? acquire_source(handle) : NULL;
    uintptr_t id = 0;
    if (s != NULL) {
        read_lock();
        metric_stage *m = find_metric(s, name, len, hash);
        read_unlock();
        if (m == NULL) m = add_metric(handle, s, name, len, hash, 1);
        if (m != NULL) id = m->id;
        release_source(s);
    }
    if (id == 0) {
        static const char text[] = "no metric handle: the source is being freed, or out of memory";
        libmq_set_error(text, sizeof text - 1);
    }
    return id;
}

int libmq_stage_metric_send(uintptr_t metric, int64_t time_ns, double value, double timeout) {
    source_stage *s;
    metric_stage *m = lock_handle(metric, &s);
    if (m == NULL) return MQ_ERR_INVALID;
    return send_point(s->handle, s, m, time_ns, value, timeout);
}

int libmq_stage_metric_send_batch(uintptr_t metric, const int64_t *time_ns, const double *values, size_t count,
                                  double timeout) {
    source_stage *s;
    metric_stage *m = lock_handle(metric, &s);
    if (m == NULL) return MQ_ERR_INVALID;
    return send_batch(s->handle, s, m, time_ns, values, count, timeout);
}

/* Hands every staged point of the source over and gives back unused
   space. With stop set, what cannot be handed over is dropped (and
   counted). Returns the first failure. */
static int drain(source_stage *s, int stop) {
    int result = MQ_OK;
    EACH_METRIC(s, m) {
        pthread_mutex_lock(&m->mu);
        int status = handover(s->handle, m, 0);
        if (status != MQ_OK) {
            if (result == MQ_OK) result = status;
            if (stop) {
                __atomic_add_fetch(&s->dropped, m->n, __ATOMIC_RELAXED);
                m->n = 0;
            }
        }
        unreserve(s->handle, m);
        pthread_mutex_unlock(&m->mu);
    }
    return result;
}

/* Raises *p to v if it is lower. */
static void store_max(uint64_t *p, uint64_t v) {
    uint64_t old = LOAD(p);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
}

void libmq_stage_close(uintptr_t handle, uint64_t core) {
    source_stage *s = acquire_source(handle);
    if (s == NULL) return;
    store_max(&s->closed_core, core);
    /* Only the current core's stop has staged points to take: an older
       core stopping late has none (its stage closed before the newer
       connect opened it again). */
    if (core >= LOAD(&s->core)) drain(s, 1);
    release_source(s);
}

void libmq_stage_open(uintptr_t handle, uint64_t core) {
    source_stage *s = acquire_source(handle);
    if (s == NULL) return;
    /* The facts (last timestamps, chunk sizes) are the new core's: read
       them again. */
    __atomic_add_fetch(&s->generation, 1, __ATOMIC_ACQ_REL);
    store_max(&s->core, core);
    release_source(s);
}

void libmq_stage_touch(uintptr_t handle) {
    read_lock();
    source_stage *s = *source_slot(handle);
    if (s != NULL) __atomic_add_fetch(&s->generation, 1, __ATOMIC_ACQ_REL);
    read_unlock();
}

int libmq_stage_flush(uintptr_t handle, double timeout) {
    source_stage *s = timeout_ok(timeout) ? acquire_source(handle) : NULL;
    if (s == NULL) return libmq_go_source_flush(handle, timeout);
    int status = drain(s, 0);
    if (status == MQ_OK) status = libmq_go_source_flush(handle, timeout);
    /* The flush sealed the core's open chunks. */
    __atomic_add_fetch(&s->generation, 1, __ATOMIC_ACQ_REL);
    release_source(s);
    return status;
}

/* Unlinks s and frees it once nobody uses it; the caller holds a
   reference, which this gives up. */
static void destroy(source_stage *s) {
    write_lock();
    source_stage **slot = source_slot(s->handle);
    if (*slot == s) *slot = s->next;
    write_unlock();
    release_source(s);
    pthread_mutex_lock(&s->ref_mu);
    while (s->refs > 0) pthread_cond_wait(&s->ref_cond, &s->ref_mu);
    pthread_mutex_unlock(&s->ref_mu);
    for (size_t i = 0; i < s->bucket_count; i++) {
        for (metric_stage *m = s->buckets[i], *next; m != NULL; m = next) {
            next = m->next;
            /* Wait for a sender that found the stage before it was unlinked:
               the source is stopped, so it returns promptly. */
            pthread_mutex_lock(&m->mu);
            pthread_mutex_unlock(&m->mu);
            free_stage(m);
        }
    }
    free(s->buckets);
    free(s->by_index);
    pthread_mutex_destroy(&s->ref_mu);
    pthread_cond_destroy(&s->ref_cond);
    free(s);
}

void libmq_stage_free(uintptr_t handle) {
    source_stage *s = acquire_source(handle);
    if (s == NULL) {
        libmq_go_source_free(handle);
        return;
    }
    if (__atomic_exchange_n(&s->freeing, 1, __ATOMIC_ACQ_REL)) {
        /* Another thread frees it, and releases the handle in Go once it
           has handed the staged points over. Releasing it here could come
           first: those handovers would then find no handle, and points
           already accepted would be dropped. */
        release_source(s);
        return;
    }
    STORE(&s->closed, 1);
    drain(s, 1);
    libmq_go_source_free(handle);
    destroy(s);
}

void libmq_stage_unregister(uintptr_t handle) {
    source_stage *s = acquire_source(handle);
    if (s != NULL && !__atomic_exchange_n(&s->freeing, 1, __ATOMIC_ACQ_REL)) {
        STORE(&s->closed, 1);
        destroy(s);
    } else if (s != NULL) {
        release_source(s);
    }
}

int libmq_stage_set_chunk_size(uintptr_t handle, const char *metric, int64_t chunk_size) {
    source_stage *s;
    metric_stage *m = metric != NULL && chunk_size >= 0 ? lock_metric(handle, metric, &s) : NULL;
    /* Staged points go first, so that a smaller chunk size publishes them
       now, as it would have without staging. */
    if (m != NULL) handover(handle, m, 0);
    int status = libmq_go_source_set_chunk_size(handle, (char *)metric, chunk_size);
    if (m != NULL) {
        m->generation = 0; /* never current: its next point reads the facts */
        pthread_mutex_unlock(&m->mu);
    }
    /* And every other stage too: one another thread created meanwhile from
       the old chunk size. (Not under the stage's mutex: the registry lock
       comes first.) */
    if (status == MQ_OK) libmq_stage_touch(handle);
    return status;
}

void libmq_stage_stats(uintptr_t handle, uint64_t *accepted, uint64_t *dropped) {
    *accepted = 0;
    *dropped = 0;
    source_stage *s = acquire_source(handle);
    if (s == NULL) return;
    EACH_METRIC(s, m) *accepted += LOAD(&m->accepted);
    *dropped = LOAD(&s->dropped);
    release_source(s);
}
