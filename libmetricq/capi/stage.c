/* Staging: the points of mq_source_send and mq_metric_send wait here, in
   C, and cross into Go a batch at a time.

   Why: a call from a C thread into Go costs 100-135 ns on its own (the cgo
   transition), more than everything else a point needs. Staged, a point
   costs a lookup of its stage (registry.c), its lock and a few stores.

   The stage is storage; every rule is the core's (libmetricq/lease.go),
   reached through one hand-over that returns the fresh facts. The core
   grants each metric's stage a lease: room for so many points (their
   buffer space reserved, never more than the metric's open chunk still
   lacks) and the timestamp they must follow. A point that fits is stored;
   when the room is used up, the points are handed over
   (libmq_go_stage_handover) and the answer is the next lease: one crossing
   per fill, and the point that fills a chunk crosses with it, so the
   chunk is sealed there. Whatever does not fit goes to the core for its
   verdict: no lease (not connected, undeclared, stopped: the reason is
   the answer), a point that does not follow the lease and batches
   (libmq_go_stage_send, checked as any batch), a full buffer
   (libmq_go_stage_await waits for space, without the stage's lock).

   A staged point is accepted: MQ_OK was returned, so it reaches the
   broker without the caller doing more. mq_source_flush, mq_source_stats
   and mq_source_set_chunk_size hand staged points over first. When the
   source stops, for whatever reason, the core, having stopped taking new
   points, calls the one hook from Go into C, libmq_stage_close: the stages
   close, and the points they hold go back to the core in its answer; C
   does not call back. After that every call goes straight to Go, which
   says the source stopped.

   Locking: see registry.c. A stage's lock guards its storage and lease.
   Nothing that may wait runs under it (wait_for_space lets it go). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metricq.h"
#include "capi_internal.h"
#include "registry.h"
#include "stage.h"
#include "_cgo_export.h"

/* Points a metric may stage, the room every lease is asked for: enough
   that the cgo transition is paid once per STAGE_MAX points (well below a
   nanosecond each), small enough that a host with thousands of busy
   metrics stages little memory (8 KiB a metric). A metric's storage is
   allocated when its first lease comes, sized by the lease, so by its
   chunk size; an idle one has none. */
enum { STAGE_MAX = 512 };

/* What the send paths return when the call goes to Go as a plain send,
   once the lock is let go: the stage closed (the source stopped or is
   being freed) or the arguments are bad; Go gives the verdict. */
enum { SEND_DIRECT = 1 };

/* libmq_go_stage_send's answer when the buffer space is neither leased nor
   free. */
enum { NO_ROOM = 1 };

/* The two ends of a source's entry: the core collected the staged points
   (libmq_stage_close, then libmq_stage_collected), and mq_source_free is
   done with it. Whichever comes second frees it: a source freed from its
   own update function stops after the free returns. */
enum { COLLECTED = 1, FREED = 2 };

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static int timeout_ok(double timeout) { return timeout > 0 && !isinf(timeout); }

static void free_storage(metric_stage *m) {
    if (m->times != &m->slot_time) {
        free(m->times);
        free(m->values);
    }
}

/* Under m's lock, with nothing staged: storage for the lease's room,
   allocated at the first lease that needs more. Out of memory, the lease
   is used as far as the storage goes (the rest of its space stays
   reserved in the core until the next hand-over). */
static void fit_storage(metric_stage *m) {
    if (m->room <= m->capacity) return;
    int64_t *times = malloc(m->room * sizeof *times);
    double *values = malloc(m->room * sizeof *values);
    if (times == NULL || values == NULL) {
        free(times);
        free(values);
        m->room = (uint32_t)m->capacity;
        return;
    }
    if (m->times != &m->slot_time) {
        free(m->times);
        free(m->values);
    }
    STAGE_SET(m->times, times);
    STAGE_SET(m->values, values);
    m->capacity = m->room;
}

/* Under m's lock: takes a lease the core granted. Its room is at most
   what the stage asked for, STAGE_MAX at most, so it fits m->room. */
static void take_lease(metric_stage *m, const libmq_lease *lease) {
    m->room = (uint32_t)(lease->room < STAGE_MAX ? lease->room : STAGE_MAX);
    m->after = lease->after;
    m->has_after = lease->has_after != 0;
    fit_storage(m);
}

/* Under m's lock: hands the staged points over and takes the next lease,
   with room for up to want points (0: the lease's space goes back). The
   core always takes staged points (unless the handle is gone: then they
   stay, for the stop to collect); a failure only says why there is no
   new lease. */
static int handover(uintptr_t handle, metric_stage *m, size_t want) {
    libmq_lease lease = {0};
    int status = libmq_go_stage_handover(handle, m->name, m->times, m->values, m->n, (int64_t)want, &lease);
    if (lease.taken) STAGE_SET(m->n, 0);
    m->held = want > 0;
    take_lease(m, &lease);
    return status;
}

/* Gives back the space of leases nobody uses right now, so that a sender
   that found the buffer full waits only for space that points really
   use. Skips stages busy right now (their space is about to be used) and
   those without a lease. The caller holds a reference and no stage's
   lock. */
static void reclaim(uintptr_t handle, source_entry *s) {
    EACH_STAGE(s, m) {
        if (stage_trylock(m)) {
            if (m->held || m->n > 0) handover(handle, m, 0);
            stage_unlock(m);
        }
    }
}

/* Under m's lock, which it lets go while it waits: reserves space for count
   points of m's lease, waiting up to timeout, without holding the stage,
   so that a flush or a stop can take it meanwhile. */
static int wait_for_space(uintptr_t handle, source_entry *s, metric_stage *m, size_t count, double timeout) {
    registry_hold(s);
    stage_unlock(m);
    reclaim(handle, s);
    int status = libmq_go_stage_await(handle, m->name, (int64_t)count, timeout);
    stage_lock(m);
    m->held = 1;
    registry_release(s);
    return status;
}

/* Under m's lock (which it may let go while it waits for space): points that
   were not staged (a batch, or a point that does not follow the lease) go
   to the core after the staged ones, checked there. The lease ends. */
static int send_unstaged(uintptr_t handle, source_entry *s, metric_stage *m, const int64_t *time_ns,
                         const double *values, size_t count, double timeout) {
    int status = MQ_OK;
    if (m->n > 0) {
        handover(handle, m, 0);
        if (m->n > 0) return SEND_DIRECT; /* the handle is gone: Go says so */
    }
    m->room = 0;
    while (status == MQ_OK && !LOAD(&s->closed)) {
        status = libmq_go_stage_send(handle, m->name, (int64_t *)time_ns, (double *)values, count);
        m->held = 1;
        if (status == MQ_OK) return MQ_OK;
        if (status == NO_ROOM) status = wait_for_space(handle, s, m, count, timeout);
        /* While the lock was let go, other senders may have taken a new
           lease and staged points under it: they cross first, or the core
           would take them, unchecked, after these later points. Asking for
           a lease of 1 keeps the space just reserved. Nor may that lease
           stage points after these have crossed. */
        if (status == MQ_OK && m->n > 0) {
            handover(handle, m, 1);
            if (m->n > 0) return SEND_DIRECT; /* the handle is gone: Go says so */
        }
        m->room = 0;
    }
    /* Refused: space taken for these points goes back. */
    if (m->held) handover(handle, m, 0);
    return status == MQ_OK ? SEND_DIRECT : status;
}

/* Under m's lock (which it may let go while it waits for space). */
static int stage_point(uintptr_t handle, source_entry *s, metric_stage *m, int64_t time_ns, double value,
                       double timeout) {
    while (m->room == 0) {
        if (LOAD(&s->closed)) return SEND_DIRECT;
        int status = handover(handle, m, STAGE_MAX);
        if (status != MQ_OK) return status;
        if (m->room == 0) { /* the buffer is full */
            status = wait_for_space(handle, s, m, 1, timeout);
            if (status != MQ_OK) return status;
        }
    }
    if (LOAD(&s->closed)) return SEND_DIRECT;
    if (m->has_after && time_ns <= m->after) return send_unstaged(handle, s, m, &time_ns, &value, 1, timeout);
    m->times[m->n] = time_ns;
    m->values[m->n] = value;
    STAGE_SET(m->n, m->n + 1);
    m->room--;
    m->after = time_ns;
    m->has_after = 1;
    /* A failure here leaves the points staged (for the stop to collect)
       or only no new lease, which the next point finds. */
    if (m->room == 0) handover(handle, m, STAGE_MAX);
    return MQ_OK;
}

/* Under m's lock, which it lets go; when the call goes to Go directly, it
   goes under a copy of m's name: m may be freed once the lock is let go. */
static void unlock_stage(metric_stage *m, int status, char name[MQ_MAX_NAME_LENGTH + 1]) {
    if (status == SEND_DIRECT) memcpy(name, m->name, m->name_len + 1);
    stage_unlock(m);
}

/* Under m's lock, which it lets go. */
static int send_point(uintptr_t handle, source_entry *s, metric_stage *m, int64_t time_ns, double value,
                      double timeout) {
    int status = timeout_ok(timeout) ? stage_point(handle, s, m, time_ns, value, timeout) : SEND_DIRECT;
    char name[MQ_MAX_NAME_LENGTH + 1];
    unlock_stage(m, status, name);
    if (status == SEND_DIRECT) return libmq_go_source_send(handle, name, time_ns, value, timeout);
    return status;
}

/* Under m's lock, which it lets go. */
static int send_batch(uintptr_t handle, source_entry *s, metric_stage *m, const int64_t *time_ns,
                      const double *values, size_t count, double timeout) {
    int status = SEND_DIRECT; /* bad arguments: Go says what is wrong, or takes an empty batch */
    if (timeout_ok(timeout) && count > 0 && count <= (size_t)INT64_MAX && time_ns != NULL && values != NULL) {
        status = send_unstaged(handle, s, m, time_ns, values, count, timeout);
    }
    char name[MQ_MAX_NAME_LENGTH + 1];
    unlock_stage(m, status, name);
    if (status == SEND_DIRECT) {
        return libmq_go_source_send_batch(handle, name, (int64_t *)time_ns, (double *)values, count, timeout);
    }
    return status;
}

/* Creates a metric's stage: for a send, only with a lease (otherwise the
   send goes to Go, which says why); for a metric handle, without one (its
   first point asks). Returns the metric's stage (this one, or one another
   thread added first), NULL if none; *id its metric handle. */
static metric_stage *add_stage(uintptr_t handle, const char *name, size_t len, int for_handle, uintptr_t *id) {
    source_entry *s = registry_acquire(handle);
    if (s == NULL) return NULL;
    libmq_lease lease = {0};
    if (!for_handle && libmq_go_stage_handover(handle, (char *)name, NULL, NULL, 0, STAGE_MAX, &lease) != MQ_OK) {
        registry_release(s);
        return NULL;
    }
    int added;
    metric_stage *m = registry_add(s, name, len, for_handle, &added);
    /* A stage another thread added first keeps its own lease: the core
       keeps one per metric, which this one only read again. */
    if (added) {
        STAGE_SET(m->times, &m->slot_time);
        STAGE_SET(m->values, &m->slot_value);
        m->capacity = 1;
        take_lease(m, &lease);
        m->held = !for_handle;
        stage_unlock(m);
    }
    *id = m != NULL ? m->id : 0;
    registry_release(s);
    return m;
}

/* Returns the metric's stage, locked, and its entry; NULL when the call
   should go straight to Go. */
static metric_stage *lock_stage(uintptr_t handle, const char *name, source_entry **source) {
    size_t len;
    uintptr_t id;
    if (!registry_name_len(name, &len)) return NULL;
    for (int attempt = 0;; attempt++) {
        metric_stage *m = registry_lock_name(handle, name, len, source);
        if (m != NULL || *source == NULL || attempt > 0) return m;
        if (add_stage(handle, name, len, 0, &id) == NULL) return NULL;
    }
}

int libmq_stage_send(uintptr_t handle, const char *metric, int64_t time_ns, double value, double timeout) {
    source_entry *s;
    metric_stage *m = timeout_ok(timeout) ? lock_stage(handle, metric, &s) : NULL;
    if (m == NULL) return libmq_go_source_send(handle, (char *)metric, time_ns, value, timeout);
    return send_point(handle, s, m, time_ns, value, timeout);
}

int libmq_stage_send_batch(uintptr_t handle, const char *metric, const int64_t *time_ns, const double *values,
                           size_t count, double timeout) {
    source_entry *s;
    metric_stage *m = NULL;
    if (timeout_ok(timeout) && count > 0 && count <= (size_t)INT64_MAX && time_ns != NULL && values != NULL) {
        m = lock_stage(handle, metric, &s);
    }
    if (m == NULL) {
        return libmq_go_source_send_batch(handle, (char *)metric, (int64_t *)time_ns, (double *)values, count,
                                          timeout);
    }
    return send_batch(handle, s, m, time_ns, values, count, timeout);
}

static const char bad_metric_text[] =
    "invalid metric handle (NULL, of a source already freed, or not made by mq_source_metric)";

static metric_stage *lock_metric_handle(uintptr_t id, source_entry **source) {
    metric_stage *m = registry_lock_id(id, source);
    if (m == NULL) libmq_set_error(bad_metric_text, sizeof bad_metric_text - 1);
    return m;
}

uintptr_t libmq_stage_metric(uintptr_t handle, const char *name) {
    if (libmq_go_stage_check_name(handle, (char *)name) != MQ_OK) return 0;
    size_t len;
    uintptr_t id = 0;
    source_entry *s;
    if (registry_name_len(name, &len)) {
        metric_stage *m = registry_lock_name(handle, name, len, &s);
        if (m != NULL) {
            id = m->id;
            stage_unlock(m);
        } else {
            add_stage(handle, name, len, 1, &id);
        }
    }
    if (id == 0) {
        static const char text[] = "no metric handle: the source is being freed, or out of memory";
        libmq_set_error(text, sizeof text - 1);
    }
    return id;
}

int libmq_stage_metric_send(uintptr_t metric, int64_t time_ns, double value, double timeout) {
    source_entry *s;
    metric_stage *m = lock_metric_handle(metric, &s);
    if (m == NULL) return MQ_ERR_INVALID;
    return send_point(s->handle, s, m, time_ns, value, timeout);
}

int libmq_stage_metric_send_batch(uintptr_t metric, const int64_t *time_ns, const double *values, size_t count,
                                  double timeout) {
    source_entry *s;
    metric_stage *m = lock_metric_handle(metric, &s);
    if (m == NULL) return MQ_ERR_INVALID;
    return send_batch(s->handle, s, m, time_ns, values, count, timeout);
}

/* Hands every staged point of the source over; keep: the leases stay
   (otherwise their space goes back). Returns the first failure to take
   staged points. */
static int drain(uintptr_t handle, int keep) {
    source_entry *s = registry_acquire(handle);
    if (s == NULL) return MQ_OK;
    int result = MQ_OK;
    EACH_STAGE(s, m) {
        stage_lock(m);
        if (m->n > 0 || (!keep && m->held)) {
            int status = handover(handle, m, keep ? m->room : 0);
            if (m->n > 0 && result == MQ_OK) result = status;
        }
        stage_unlock(m);
    }
    registry_release(s);
    return result;
}

int libmq_stage_flush(uintptr_t handle, double timeout) {
    int status = timeout_ok(timeout) ? drain(handle, 0) : MQ_OK;
    return status == MQ_OK ? libmq_go_source_flush(handle, timeout) : status;
}

int libmq_stage_stats(uintptr_t handle, mq_stats *stats, size_t size) {
    drain(handle, 1); /* staged points count once the core has them */
    return libmq_go_source_stats(handle, stats, size);
}

int libmq_stage_set_chunk_size(uintptr_t handle, const char *metric, int64_t chunk_size) {
    size_t len;
    source_entry *s;
    metric_stage *m = NULL;
    if (chunk_size >= 0 && registry_name_len(metric, &len)) {
        m = registry_lock_name(handle, metric, len, &s);
    }
    /* Staged points go first, so that a smaller chunk size publishes them
       now, as it would have without staging; the lease ends, and the next
       one follows the new chunk size. */
    if (m != NULL) handover(handle, m, 0);
    int status = libmq_go_source_set_chunk_size(handle, (char *)metric, chunk_size);
    if (m != NULL) stage_unlock(m);
    return status;
}

/* Gives up the caller's reference, and frees the entry when both ends
   are done with it. */
static void finish(source_entry *s, int end) {
    int done = __atomic_or_fetch(&s->done, end, __ATOMIC_ACQ_REL);
    if (done == (COLLECTED | FREED)) {
        registry_destroy(s, free_storage);
    } else {
        registry_release(s);
    }
}

libmq_staged_list *libmq_stage_close(uintptr_t handle) {
    source_entry *s = registry_acquire(handle);
    if (s == NULL) return NULL;
    if (registry_close(s)) { /* closed once only */
        registry_release(s);
        return NULL;
    }
    /* No stage is added once closed, and none stages again. */
    size_t stages = 0;
    EACH_STAGE(s, m) stages++;
    libmq_staged_list *list = malloc(sizeof *list + stages * sizeof *list->batches);
    if (list == NULL) { /* out of memory: hand them over one by one instead */
        drain(handle, 0);
        finish(s, COLLECTED);
        return NULL;
    }
    list->source = s;
    list->batches = (libmq_staged *)(list + 1);
    list->count = 0;
    /* The list takes the storage of the stages that hold points: nothing
       else can hand them over any more. A sender that got in first is
       waited for. */
    EACH_STAGE(s, m) {
        stage_lock(m);
        m->room = 0;
        if (m->n > 0 && m->times != &m->slot_time && list->count < stages) {
            list->batches[list->count++] = (libmq_staged){m->name, m->times, m->values, m->n};
            STAGE_SET(m->times, &m->slot_time);
            STAGE_SET(m->values, &m->slot_value);
            m->capacity = 1;
            STAGE_SET(m->n, 0);
        } else if (m->n > 0) { /* the one-point slot (out of memory) */
            handover(handle, m, 0);
        }
        stage_unlock(m);
    }
    return list;
}

void libmq_stage_collected(libmq_staged_list *list) {
    for (size_t i = 0; i < list->count; i++) {
        free(list->batches[i].times);
        free(list->batches[i].values);
    }
    source_entry *s = list->source;
    free(list);
    finish(s, COLLECTED);
}

void libmq_stage_free(uintptr_t handle) {
    source_entry *s = registry_acquire(handle);
    if (s == NULL) {
        libmq_go_source_free(handle);
        return;
    }
    if (__atomic_exchange_n(&s->freeing, 1, __ATOMIC_ACQ_REL)) {
        /* Another thread frees it. */
        registry_release(s);
        return;
    }
    /* The core's stop (in this call, or after it when the source is freed
       from its own update function) collects the staged points. */
    libmq_go_source_free(handle);
    finish(s, FREED);
}

void libmq_stage_forget(uintptr_t handle) {
    source_entry *s = registry_acquire(handle);
    if (s != NULL && !__atomic_exchange_n(&s->freeing, 1, __ATOMIC_ACQ_REL)) {
        finish(s, FREED);
    } else if (s != NULL) {
        registry_release(s);
    }
}
