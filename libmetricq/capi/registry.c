/* The registry: which source handles the C side knows, and their metrics'
   stages (stage.c), by name and by metric handle.

   A metric handle (mq_metric *) is an integer, never an address, so that
   a stale, foreign or made-up one is simply not found and never read
   through: the source's handle in the high bits, 1 + the stage's index in
   the source's by_index in the low INDEX_BITS. Go never reuses a source
   handle, so a handle of a freed source stays invalid for good.

   By name, a source's stages are found in an open-addressing table whose
   slots hold each name's hash, so that a lookup reads one slot and then
   only the stage it is after; before that, the stage the calling thread
   is expected to want (expected_stage) spares it the hash and the table.
   With many metrics each of those is a cache miss, which no later call
   can overlap: taking and letting go of the stage's lock and of the
   registry's reader count are atomic instructions, full barriers on x86.
   So a stage keeps what a send touches in one cache line, stages lie one
   after another in memory in the order they were added, and what the
   next send by name will likely touch is fetched ahead.

   Locking: the registry lock (read_lock/write_lock) guards the tables of
   sources and stages. A sender locks the stage (stage_lock) while it
   still holds the registry lock for reading, and only then lets it go:
   registry_destroy, having unlinked the source under the write lock,
   locks every stage once more before freeing, and so waits for every
   sender that found the source. Long operations hold a reference
   instead, which registry_destroy also waits for. */
#define _GNU_SOURCE /* syscall, strnlen: also when compiled as strict C11 (tests/c/test_registry.c) */
#include <linux/futex.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

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

static long futex(uint32_t *word, int op, uint32_t value) {
    return syscall(SYS_futex, word, op | FUTEX_PRIVATE_FLAG, value, NULL, NULL, 0);
}

/* The lock word was not free: mark it waited for (2) and sleep until it is
   free again. Whoever takes it here leaves it 2, so its unlock wakes the
   next sleeper, if any (at worst one needless wake). */
void stage_lock_wait(uint32_t *word) {
    while (__atomic_exchange_n(word, 2, __ATOMIC_ACQUIRE) != 0) futex(word, FUTEX_WAIT, 2);
}

/* A wake may reach a stage freed meanwhile (registry_destroy takes the
   lock once before freeing): the kernel then wakes nobody or, if the
   memory is a lock word again, causes a spurious wake, which
   stage_lock_wait's loop absorbs. */
void stage_lock_wake(uint32_t *word) { futex(word, FUTEX_WAKE, 1); }

int registry_name_len(const char *name, size_t *len) {
    if (name == NULL) return 0;
    *len = strnlen(name, MQ_MAX_NAME_LENGTH + 1);
    return *len <= MQ_MAX_NAME_LENGTH;
}

/* FNV-1a. */
static uint64_t name_hash(const char *name, size_t len) {
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)name[i]) * 1099511628211ull;
    return h;
}

static source_entry **source_slot(uintptr_t handle) {
    source_entry **p = &sources[handle % SOURCE_BUCKETS];
    while (*p != NULL && (*p)->handle != handle) p = &(*p)->next;
    return p;
}

/* The first slot to probe for a hash: its high bits after one multiply
   (FNV-1a's low bits alone cluster under linear probing). */
static size_t first_slot(uint64_t hash, unsigned bits) {
    return (size_t)((hash * 0x9e3779b97f4a7c15ull) >> (64 - bits));
}

/* memcmp(a, b, len) == 0 for a name's bytes, inline: for names this short
   the call and its dispatch cost more than the compare. Words are read
   with memcpy (any alignment); the last word may overlap the one before. */
static int same_name(const char *a, const char *b, size_t len) {
    uint64_t x, y;
    if (len < sizeof x) {
        for (size_t i = 0; i < len; i++) {
            if (a[i] != b[i]) return 0;
        }
        return 1;
    }
    for (size_t i = 0; i + sizeof x < len; i += sizeof x) {
        memcpy(&x, a + i, sizeof x);
        memcpy(&y, b + i, sizeof y);
        if (x != y) return 0;
    }
    memcpy(&x, a + len - sizeof x, sizeof x);
    memcpy(&y, b + len - sizeof y, sizeof y);
    return x == y;
}

static int is_named(const metric_stage *m, const char *name, size_t len) {
    return m != NULL && m->name_len == len && same_name(m->name, name, len);
}

/* Linear probing; a table always has an empty slot, which ends the probe. */
static metric_stage *find_stage(const source_entry *s, const char *name, size_t len, uint64_t hash) {
    size_t mask = ((size_t)1 << s->slot_bits) - 1;
    for (size_t i = first_slot(hash, s->slot_bits);; i = (i + 1) & mask) {
        const stage_slot *slot = &s->slots[i];
        if (slot->stage == NULL) return NULL;
        if (slot->hash == hash && is_named(slot->stage, name, len)) return slot->stage;
    }
}

static void put_slot(stage_slot *slots, unsigned bits, uint64_t hash, metric_stage *m) {
    size_t mask = ((size_t)1 << bits) - 1, i = first_slot(hash, bits);
    while (slots[i].stage != NULL) i = (i + 1) & mask;
    slots[i] = (stage_slot){hash, m};
}

enum { FIRST_SLOT_BITS = 4 };

/* A block of stages starts with its link, padded so that the stages after
   it start on a cache line. */
enum { BLOCK_HEADER = 64 };
typedef struct stage_block {
    struct stage_block *next;
} stage_block;

void libmq_registry_add(uintptr_t handle) {
    source_entry *s = calloc(1, sizeof *s);
    if (s == NULL) return; /* the source works without stages */
    s->slot_bits = FIRST_SLOT_BITS;
    s->slots = calloc((size_t)1 << s->slot_bits, sizeof *s->slots);
    if (s->slots == NULL) {
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
        free(s->slots);
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

/* The stage this thread sent to by name last, and its source's handle.
   Valid while that handle is registered: a source's stages live as long
   as its entry, and Go never reuses a handle. initial-exec, as
   reader_slot (16 bytes more of the static TLS space). */
static __thread struct {
    uintptr_t handle;
    metric_stage *stage;
} recent __attribute__((tls_model("initial-exec")));

/* Hosts mostly send their metrics in the same order, round after round,
   or a run of points to one metric: so the stage a name is looked for is
   most likely the one this thread sent to last, or the one that followed
   that one last time. Checking those two first spares the hash and the
   table (a random access, a cache miss once there are many metrics). */
static metric_stage *expected_stage(uintptr_t handle, const char *name, size_t len) {
    if (recent.handle != handle || recent.stage == NULL) return NULL;
    metric_stage *last = recent.stage;
    if (is_named(last, name, len)) return last;
    metric_stage *next = __atomic_load_n(&last->follower, __ATOMIC_RELAXED);
    return is_named(next, name, len) ? next : NULL;
}

/* The cache misses left to a send by name with many metrics are the
   stage and where its next point goes; while the host follows its order,
   they are fetched ahead, while the caller is busy elsewhere. With the
   stage likely next (next) fetched one call ago (followed: this call's
   stage was expected), its fields are in the cache now: fetch where its
   next point goes, and the stage likely after it. Otherwise only next:
   reading its fields would wait for memory. Nothing here is relied upon
   (next may change meanwhile, its storage move: a prefetch of any address
   is harmless), hence relaxed loads. */
static void fetch_ahead(metric_stage *next, int followed) {
    if (next == NULL) return;
    if (!followed) {
        __builtin_prefetch(&next->lock, 1);
        return;
    }
    metric_stage *after = __atomic_load_n(&next->follower, __ATOMIC_RELAXED);
    if (after != NULL) __builtin_prefetch(&after->lock, 1);
    uint32_t n = __atomic_load_n(&next->n, __ATOMIC_RELAXED);
    __builtin_prefetch(__atomic_load_n(&next->times, __ATOMIC_RELAXED) + n, 1);
    __builtin_prefetch(__atomic_load_n(&next->values, __ATOMIC_RELAXED) + n, 1);
}

/* Under the read lock, with m found by name in the source of handle. */
static void remember(uintptr_t handle, metric_stage *m, int followed) {
    if (recent.handle == handle && recent.stage != m && __atomic_load_n(&recent.stage->follower, __ATOMIC_RELAXED) != m) {
        __atomic_store_n(&recent.stage->follower, m, __ATOMIC_RELAXED);
    }
    recent.handle = handle;
    recent.stage = m;
    fetch_ahead(__atomic_load_n(&m->follower, __ATOMIC_RELAXED), followed);
}

metric_stage *registry_lock_name(uintptr_t handle, const char *name, size_t len, source_entry **source) {
    read_lock();
    source_entry *s = *source_slot(handle);
    metric_stage *m = NULL;
    int followed = 0;
    if (s != NULL) {
        m = expected_stage(handle, name, len);
        followed = m != NULL;
        if (m == NULL) m = find_stage(s, name, len, name_hash(name, len));
    }
    if (m != NULL) {
        stage_lock(m);
        remember(handle, m, followed);
    }
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
        stage_lock(m);
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

/* Under the write lock: doubles the slots when half are used, so that
   probes stay short. Returns whether one more stage has a slot: out of
   memory, the table fills up to its last empty slot (which ends every
   probe), and then no stage is added. */
static int make_slot(source_entry *s) {
    size_t count = (size_t)1 << s->slot_bits;
    if ((s->metric_count + 1) * 2 > count && s->slot_bits < sizeof(size_t) * 8 - 2) {
        stage_slot *slots = calloc(count * 2, sizeof *slots);
        if (slots != NULL) {
            for (size_t i = 0; i < count; i++) {
                if (s->slots[i].stage != NULL) put_slot(slots, s->slot_bits + 1, s->slots[i].hash, s->slots[i].stage);
            }
            free(s->slots);
            s->slots = slots;
            s->slot_bits++;
            count *= 2;
        }
    }
    return s->metric_count + 1 < count;
}

/* Under the write lock, with a slot for m. */
static void link_stage(source_entry *s, metric_stage *m, uint64_t hash) {
    put_slot(s->slots, s->slot_bits, hash, m);
    s->metric_count++;
    give_id(s, m);
    m->older = s->newest;
    __atomic_store_n(&s->newest, m, __ATOMIC_RELEASE);
}

/* Under the write lock: memory for a stage of size bytes (a multiple of
   64), zeroed, from the source's current block or a new one; NULL out of
   memory. Blocks double from 4 KiB up to 256 KiB, so that a source with a
   few metrics takes little and one with many few allocations. */
static metric_stage *carve_stage(source_entry *s, size_t size) {
    if (size > s->block_left) {
        size_t bytes = s->block_bytes == 0 ? 4096 : s->block_bytes;
        while (bytes < BLOCK_HEADER + size) bytes *= 2;
        stage_block *block = aligned_alloc(64, bytes);
        if (block == NULL) return NULL;
        block->next = s->blocks;
        s->blocks = block;
        s->block_free = (char *)block + BLOCK_HEADER;
        s->block_left = bytes - BLOCK_HEADER;
        s->block_bytes = bytes < 256 * 1024 ? bytes * 2 : bytes;
    }
    metric_stage *m = (metric_stage *)s->block_free;
    s->block_free += size;
    s->block_left -= size;
    memset(m, 0, size);
    return m;
}

metric_stage *registry_add(source_entry *s, const char *name, size_t len, int for_handle, int *added) {
    uint64_t hash = name_hash(name, len);
    size_t size = (offsetof(metric_stage, name) + len + 1 + 63) / 64 * 64;
    *added = 0;
    write_lock();
    metric_stage *m = find_stage(s, name, len, hash);
    int open = for_handle ? !__atomic_load_n(&s->freeing, __ATOMIC_ACQUIRE) : !__atomic_load_n(&s->closed, __ATOMIC_ACQUIRE);
    if (m == NULL && open && make_slot(s) && (m = carve_stage(s, size)) != NULL) {
        m->name_len = (uint8_t)len;
        memcpy(m->name, name, len);
        link_stage(s, m, hash);
        /* Nobody else can have it yet: this cannot wait. */
        stage_lock(m);
        *added = 1;
    }
    write_unlock();
    return m;
}

int registry_close(source_entry *s) {
    write_lock();
    int was = __atomic_exchange_n(&s->closed, 1, __ATOMIC_ACQ_REL);
    write_unlock();
    return was;
}

void registry_destroy(source_entry *s, void (*free_storage)(metric_stage *)) {
    write_lock();
    source_entry **slot = source_slot(s->handle);
    if (*slot == s) *slot = s->next;
    write_unlock();
    registry_release(s);
    pthread_mutex_lock(&s->ref_mu);
    while (s->refs > 0) pthread_cond_wait(&s->ref_cond, &s->ref_mu);
    pthread_mutex_unlock(&s->ref_mu);
    for (metric_stage *m = s->newest, *older; m != NULL; m = older) {
        older = m->older;
        stage_lock(m);
        stage_unlock(m);
        free_storage(m);
    }
    for (stage_block *block = s->blocks, *next; block != NULL; block = next) {
        next = block->next;
        free(block);
    }
    free(s->slots);
    free(s->by_index);
    pthread_mutex_destroy(&s->ref_mu);
    pthread_cond_destroy(&s->ref_cond);
    free(s);
}
