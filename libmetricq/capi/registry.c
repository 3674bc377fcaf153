/* The registry: which source handles the C side knows, and their metrics'
   stages (stage.c), by name and by metric handle.

   A metric handle (mq_metric *) is an integer, never an address, so that
   a stale, foreign or made-up one is simply not found and never read
   through: the source's handle in the high bits, 1 + the stage's index in
   the source's by_index in the low INDEX_BITS. Go never reuses a source
   handle, so a handle of a freed source stays invalid for good.

   Locking: the registry lock (read_lock/write_lock) guards the tables of
   sources and stages. A sender locks the stage's mutex while it still
   holds the registry lock for reading, and only then lets it go:
   registry_destroy, having unlinked the source under the write lock,
   locks every stage's mutex once more before freeing, and so waits for
   every sender that found the source. Long operations hold a reference
   instead, which registry_destroy also waits for. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "metricq.h"
#include "registry.h"

enum { SOURCE_BUCKETS = 64 };

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
/* initial-exec: read with one instruction instead of a call to
   __tls_get_addr on every point (4 bytes of the static TLS space that
   libraries loaded with dlopen may use, as the Go runtime's own does). */
static __thread int reader_slot __attribute__((tls_model("initial-exec"))) = -1;

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

static source_entry *sources[SOURCE_BUCKETS];

int registry_hash(const char *name, size_t *len, uint64_t *hash) {
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

static source_entry **source_slot(uintptr_t handle) {
    source_entry **p = &sources[handle % SOURCE_BUCKETS];
    while (*p != NULL && (*p)->handle != handle) p = &(*p)->next;
    return p;
}

static metric_stage *find_stage(source_entry *s, const char *name, size_t len, uint64_t hash) {
    for (metric_stage *m = s->buckets[hash & (s->bucket_count - 1)]; m != NULL; m = m->next) {
        if (m->hash == hash && m->name_len == len && memcmp(m->name, name, len) == 0) return m;
    }
    return NULL;
}

void libmq_registry_add(uintptr_t handle) {
    source_entry *s = calloc(1, sizeof *s);
    if (s == NULL) return; /* the source works without stages */
    s->bucket_count = 16;
    s->buckets = calloc(s->bucket_count, sizeof *s->buckets);
    if (s->buckets == NULL) {
        free(s);
        return;
    }
    s->handle = handle;
    pthread_mutex_init(&s->ref_mu, NULL);
    pthread_cond_init(&s->ref_cond, NULL);
    write_lock();
    source_entry **slot = source_slot(handle);
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

void registry_hold(source_entry *s) {
    pthread_mutex_lock(&s->ref_mu);
    s->refs++;
    pthread_mutex_unlock(&s->ref_mu);
}

source_entry *registry_acquire(uintptr_t handle) {
    read_lock();
    source_entry *s = *source_slot(handle);
    if (s != NULL) registry_hold(s);
    read_unlock();
    return s;
}

void registry_release(source_entry *s) {
    pthread_mutex_lock(&s->ref_mu);
    if (--s->refs == 0) pthread_cond_broadcast(&s->ref_cond);
    pthread_mutex_unlock(&s->ref_mu);
}

metric_stage *registry_lock_name(uintptr_t handle, const char *name, size_t len, uint64_t hash,
                                 source_entry **source) {
    read_lock();
    source_entry *s = *source_slot(handle);
    metric_stage *m = s == NULL ? NULL : find_stage(s, name, len, hash);
    if (m != NULL) pthread_mutex_lock(&m->mu);
    read_unlock();
    *source = s;
    return m;
}

metric_stage *registry_lock_id(uintptr_t id, source_entry **source) {
    uintptr_t index = id & INDEX_MASK;
    metric_stage *m = NULL;
    *source = NULL;
    if (index == 0) return NULL;
    read_lock();
    source_entry *s = *source_slot(id >> INDEX_BITS);
    if (s != NULL && index <= s->index_count) {
        m = s->by_index[index - 1];
        pthread_mutex_lock(&m->mu);
        *source = s;
    }
    read_unlock();
    return m;
}

/* Under the write lock: gives m the next metric handle of s, if memory
   and the handle's bits allow (otherwise m is only found by name). */
static void give_id(source_entry *s, metric_stage *m) {
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
static void link_stage(source_entry *s, metric_stage *m) {
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
    __atomic_store_n(&s->newest, m, __ATOMIC_RELEASE);
}

metric_stage *registry_insert(source_entry *s, metric_stage *m, int for_handle) {
    write_lock();
    metric_stage *found = find_stage(s, m->name, m->name_len, m->hash);
    int open = for_handle ? !__atomic_load_n(&s->freeing, __ATOMIC_ACQUIRE) : !__atomic_load_n(&s->closed, __ATOMIC_ACQUIRE);
    if (found == NULL && open) {
        link_stage(s, m);
        found = m;
    }
    write_unlock();
    return found;
}

int registry_close(source_entry *s) {
    write_lock();
    int was = __atomic_exchange_n(&s->closed, 1, __ATOMIC_ACQ_REL);
    write_unlock();
    return was;
}

void registry_destroy(source_entry *s, void (*free_stage)(metric_stage *)) {
    write_lock();
    source_entry **slot = source_slot(s->handle);
    if (*slot == s) *slot = s->next;
    write_unlock();
    registry_release(s);
    pthread_mutex_lock(&s->ref_mu);
    while (s->refs > 0) pthread_cond_wait(&s->ref_cond, &s->ref_mu);
    pthread_mutex_unlock(&s->ref_mu);
    for (size_t i = 0; i < s->bucket_count; i++) {
        for (metric_stage *m = s->buckets[i], *next; m != NULL; m = next) {
            next = m->next;
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
