/* The C registry (libmetricq/capi/registry.c) on its own, compiled with it
   under a sanitizer (ThreadSanitizer, or AddressSanitizer with UBSan) by
   libmetricq/capi/ctest: many threads add the same metrics' stages at
   once, then find them by name, in orders that agree and orders that do
   not, in two sources with the same names, and by metric handle, each
   changing its stage under the stage's lock; then a source closes and is
   destroyed while the threads' remembered stages point into it. Exit
   status 0 when every check holds. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "registry.h"

enum { THREADS = 8, NAMES = 3000, ROUNDS = 20 };
static const uintptr_t handles[2] = {7, 8};

static int failures;
static pthread_mutex_t report_mu = PTHREAD_MUTEX_INITIALIZER;

#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) {                                           \
            pthread_mutex_lock(&report_mu);                      \
            if (failures++ < 20) {                               \
                fprintf(stderr, "FAIL line %d: ", __LINE__);     \
                fprintf(stderr, __VA_ARGS__);                    \
                fputc('\n', stderr);                             \
            }                                                    \
            pthread_mutex_unlock(&report_mu);                    \
        }                                                        \
    } while (0)

static char names[NAMES][32];
static int added[2][NAMES];   /* how often registry_add said "added", per source and name */
static uintptr_t ids[2][NAMES];

/* The i-th name a thread visits in round r: thread 0 and 1 keep one
   order (so the expected stage is right), the others change it. */
static int name_at(int thread, int round, int i) {
    if (thread < 2) return i;
    return (int)(((unsigned)i * 7919u + (unsigned)(thread * 131 + round * 17)) % NAMES);
}

static void *adder(void *arg) {
    int thread = (int)(intptr_t)arg;
    for (int k = 0; k < 2; k++) {
        source_entry *s = registry_acquire(handles[k]);
        CHECK(s != NULL, "acquire %d", k);
        if (s == NULL) return NULL;
        for (int i = 0; i < NAMES; i++) {
            int at = (i + thread * (NAMES / THREADS)) % NAMES;
            int was_added;
            metric_stage *m = registry_add(s, names[at], strlen(names[at]), thread % 2, &was_added);
            CHECK(m != NULL, "add %s", names[at]);
            if (m == NULL) continue;
            CHECK(strcmp(m->name, names[at]) == 0, "add %s gave %s", names[at], m->name);
            if (was_added) {
                __atomic_add_fetch(&added[k][at], 1, __ATOMIC_RELAXED);
                __atomic_store_n(&ids[k][at], m->id, __ATOMIC_RELAXED);
                stage_unlock(m);
            }
        }
        registry_release(s);
    }
    return NULL;
}

static void *sender(void *arg) {
    int thread = (int)(intptr_t)arg;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < NAMES; i++) {
            int at = name_at(thread, round, i);
            /* Odd threads send to both sources in turn, with the same names. */
            for (int k = 0; k < (thread % 2 ? 2 : 1); k++) {
                source_entry *s;
                metric_stage *m = registry_lock_name(handles[k], names[at], strlen(names[at]), &s);
                CHECK(m != NULL, "lock %s in source %d", names[at], k);
                if (m == NULL) continue;
                CHECK(s != NULL && s->handle == handles[k], "%s: stage of the wrong source", names[at]);
                CHECK(strcmp(m->name, names[at]) == 0 && m->id == ids[k][at], "looked for %s, found %s",
                      names[at], m->name);
                STAGE_SET(m->n, m->n + 1); /* under the stage's lock: no update may be lost */
                stage_unlock(m);
            }
            if (i % 7 == 0) {
                source_entry *s;
                metric_stage *m = registry_lock_id(ids[0][at], &s);
                CHECK(m != NULL && strcmp(m->name, names[at]) == 0, "by handle: %s", names[at]);
                if (m == NULL) continue;
                m->room++;
                stage_unlock(m);
            }
        }
    }
    return NULL;
}

/* Adds more stages to source 1 while the senders look theirs up: its
   table grows (every slot moves) under their feet. */
enum { EXTRA = 5000 };
static void *grower(void *arg) {
    (void)arg;
    source_entry *s = registry_acquire(handles[1]);
    CHECK(s != NULL, "acquire for growing");
    if (s == NULL) return NULL;
    for (int i = 0; i < EXTRA; i++) {
        char name[32];
        int n = snprintf(name, sizeof name, "extra.%d", i), was_added;
        metric_stage *m = registry_add(s, name, (size_t)n, 0, &was_added);
        CHECK(m != NULL && was_added, "extra %s", name);
        if (m != NULL && was_added) stage_unlock(m);
    }
    registry_release(s);
    return NULL;
}

static int freed;
static void count_freed(metric_stage *m) {
    (void)m;
    freed++;
}

int main(void) {
    for (int i = 0; i < NAMES; i++) {
        /* Short names, and long ones that differ only past the 16 bytes
           of the stage's hot line. */
        snprintf(names[i], sizeof names[i], i % 2 ? "reg.%05d" : "registry.long.name.%05d", i);
    }
    libmq_registry_add(handles[0]);
    libmq_registry_add(handles[1]);

    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, adder, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < NAMES; i++) {
            CHECK(added[k][i] == 1, "source %d, %s added %d times", k, names[i], added[k][i]);
            CHECK(ids[k][i] != 0, "source %d, %s without a metric handle", k, names[i]);
        }
    }

    pthread_t grow;
    pthread_create(&grow, NULL, grower, NULL);
    for (int t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, sender, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    pthread_join(grow, NULL);
    long by_id = 0;
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < NAMES; i++) {
            source_entry *s;
            metric_stage *m = registry_lock_id(ids[k][i], &s);
            CHECK(m != NULL, "source %d, %s by handle", k, names[i]);
            if (m == NULL) continue;
            uint32_t want = (uint32_t)(k == 0 ? THREADS * ROUNDS : THREADS / 2 * ROUNDS);
            CHECK(m->n == want, "source %d, %s: %" PRIu32 " sends counted, want %" PRIu32, k, names[i], m->n, want);
            by_id += m->room;
            stage_unlock(m);
        }
    }
    CHECK(by_id == (long)THREADS * ROUNDS * ((NAMES + 6) / 7), "%ld sends by handle counted", by_id);
    source_entry *s;
    CHECK(registry_lock_id((handles[0] << 24) | (NAMES + 1), &s) == NULL, "an index past the last one was found");
    CHECK(registry_lock_id(12345, &s) == NULL, "a made-up handle was found");

    /* Closed: nothing is added for a send, a metric handle still is. */
    s = registry_acquire(handles[0]);
    CHECK(!registry_close(s) && registry_close(s), "close: first, then again");
    int was_added;
    CHECK(registry_add(s, "after.close", 11, 0, &was_added) == NULL, "a stage was added after the close");
    metric_stage *late = registry_add(s, "after.close", 11, 1, &was_added);
    CHECK(late != NULL && was_added, "no stage for a metric handle after the close");
    if (late != NULL && was_added) stage_unlock(late);
    registry_release(s);

    /* Destroyed while this thread's remembered stage is one of its own. */
    metric_stage *m = registry_lock_name(handles[0], names[3], strlen(names[3]), &s);
    CHECK(m != NULL, "lock before destroy");
    if (m != NULL) stage_unlock(m);
    s = registry_acquire(handles[0]);
    registry_destroy(s, count_freed);
    CHECK(freed == NAMES + 1, "%d stages freed, want %d", freed, NAMES + 1);
    CHECK(registry_acquire(handles[0]) == NULL, "a destroyed source was found");
    CHECK(registry_lock_name(handles[0], names[3], strlen(names[3]), &s) == NULL && s == NULL,
          "a destroyed source's stage was found by name");
    m = registry_lock_name(handles[1], names[3], strlen(names[3]), &s);
    CHECK(m != NULL && s != NULL && s->handle == handles[1], "the other source's stage");
    if (m != NULL) stage_unlock(m);

    fprintf(stderr, failures == 0 ? "registry: all checks passed\n" : "registry: %d checks failed\n", failures);
    return failures == 0 ? 0 : 1;
}
