/* A MetricQ IntervalSource in C: every period it reads this machine's load
   average, available memory and CPU usage from /proc and sends them.

   The manager's configuration for the token sets the rate in Hz ("rate",
   default 1) and the metric name prefix ("prefix", default
   "example.c.sysinfo"); the configuration hook declares the metrics.
   SIGINT or SIGTERM stop it cleanly (buffered points are published).

     cc -o interval_source interval_source.c $(pkg-config --cflags --libs libmetricq)
     ./interval_source [URL [TOKEN [ROUNDS]]]      (ROUNDS 0: until a signal)

   URL defaults to $METRICQ_URL, else amqp://guest:guest@127.0.0.1:5672/. */
#define _POSIX_C_SOURCE 200809L
#include <metricq.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sysinfo_source {
    double rate;          /* Hz */
    char prefix[128];
    char load[160], memory[160], cpu[160];
    long rounds, max_rounds;
    long long sent_load, sent_memory, sent_cpu; /* points accepted, per metric */
    unsigned long long cpu_busy, cpu_total; /* from the previous round */
    int have_cpu;
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* Finds "key": in a flat JSON object and returns what follows the colon.
   (An example needs no JSON library; use one in real code.) */
static const char *json_value(const char *json, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *p = strstr(json, pattern);
    return p ? p + strlen(pattern) : NULL;
}

/* Called with the configuration: at connect, and whenever it changes. */
static int on_config(mq_source *src, const char *config, void *user) {
    struct sysinfo_source *s = user;
    const char *v = json_value(config, "rate");
    double rate = v ? strtod(v, NULL) : 1.0;
    if (!(rate > 0 && rate <= 1000)) {
        fprintf(stderr, "config: rate must be in (0, 1000] Hz\n");
        return 1; /* refuse the configuration */
    }
    s->rate = rate;
    if ((v = json_value(config, "prefix")) != NULL && *v == '"') {
        snprintf(s->prefix, sizeof s->prefix, "%.*s", (int)strcspn(v + 1, "\""), v + 1);
    }
    snprintf(s->load, sizeof s->load, "%s.load1", s->prefix);
    snprintf(s->memory, sizeof s->memory, "%s.mem_available", s->prefix);
    snprintf(s->cpu, sizeof s->cpu, "%s.cpu_usage", s->prefix);

    char metadata[1024];
    snprintf(metadata, sizeof metadata,
             "{\"%s\": {\"unit\": \"\", \"rate\": %g, \"description\": \"1-minute load average\", \"scope\": \"last\"},"
             " \"%s\": {\"unit\": \"B\", \"rate\": %g, \"description\": \"available memory\", \"scope\": \"point\"},"
             " \"%s\": {\"unit\": \"%%\", \"rate\": %g, \"description\": \"CPU busy since the last round\", \"scope\": \"last\"}}",
             s->load, rate, s->memory, rate, s->cpu, rate);
    int rc = mq_source_declare_many(src, metadata, MQ_DEFAULT_TIMEOUT);
    if (rc != MQ_OK) {
        fprintf(stderr, "declare: %s: %s\n", mq_strerror(rc), mq_last_error());
        return rc;
    }
    /* Takes effect from the next deadline when the schedule already runs. */
    return mq_source_set_period(src, 1.0 / rate);
}

static int read_load(double *load) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (f == NULL) return -1;
    int ok = fscanf(f, "%lf", load) == 1;
    fclose(f);
    return ok ? 0 : -1;
}

static int read_mem_available(double *bytes) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (f == NULL) return -1;
    char line[256];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long long kib;
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
            *bytes = (double)kib * 1024;
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static int read_cpu(unsigned long long *busy, unsigned long long *total) {
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL) return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 4) return -1;
    *total = 0;
    for (int i = 0; i < 8; i++) *total += v[i];
    *busy = *total - v[3] - v[4]; /* minus idle and iowait */
    return 0;
}

/* One round: runs on a library thread, every period. */
static int update(mq_source *src, void *user) {
    struct sysinfo_source *s = user;
    int64_t now = mq_now();
    double load, memory;
    unsigned long long busy, total;
    int rc = MQ_OK;
    if (read_load(&load) == 0) {
        rc = mq_source_send(src, s->load, now, load, MQ_DEFAULT_TIMEOUT);
        if (rc == MQ_OK) s->sent_load++;
    }
    if (rc == MQ_OK && read_mem_available(&memory) == 0) {
        rc = mq_source_send(src, s->memory, now, memory, MQ_DEFAULT_TIMEOUT);
        if (rc == MQ_OK) s->sent_memory++;
    }
    if (rc == MQ_OK && read_cpu(&busy, &total) == 0) {
        if (s->have_cpu && total > s->cpu_total) {
            double usage = 100.0 * (double)(busy - s->cpu_busy) / (double)(total - s->cpu_total);
            rc = mq_source_send(src, s->cpu, now, usage, MQ_DEFAULT_TIMEOUT);
            if (rc == MQ_OK) s->sent_cpu++;
        }
        s->cpu_busy = busy;
        s->cpu_total = total;
        s->have_cpu = 1;
    }
    if (rc != MQ_OK) {
        fprintf(stderr, "send: %s: %s\n", mq_strerror(rc), mq_last_error());
        return rc; /* stops the source */
    }
    s->rounds++;
    if (stop_requested || (s->max_rounds > 0 && s->rounds >= s->max_rounds)) {
        /* Stopping from inside update is allowed: mq_source_run_interval
           then returns MQ_OK. */
        mq_source_stop(src, MQ_DEFAULT_TIMEOUT);
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : getenv("METRICQ_URL");
    if (url == NULL) url = "amqp://guest:guest@127.0.0.1:5672/";
    const char *token = argc > 2 ? argv[2] : "source-c-sysinfo";
    static struct sysinfo_source s = {.rate = 1, .prefix = "example.c.sysinfo"};
    s.max_rounds = argc > 3 ? atol(argv[3]) : 0;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* Two steps, so that the hook sees the first configuration. */
    mq_source *src = mq_source_create(url, token);
    if (src == NULL) {
        fprintf(stderr, "%s\n", mq_last_error());
        return 1;
    }
    mq_source_set_config_handler(src, on_config, &s);
    int rc = mq_source_connect(src, MQ_DEFAULT_TIMEOUT);
    if (rc == MQ_OK) {
        rc = mq_source_run_interval(src, 1.0 / s.rate, update, &s);
    }
    if (rc != MQ_OK) {
        fprintf(stderr, "%s: %s\n", mq_strerror(rc), mq_last_error());
    }
    mq_source_free(src);
    fprintf(stderr, "%ld rounds\n", s.rounds);
    /* For `make demo`: the points sent per metric, compared with what arrived. */
    const char *report = getenv("METRICQ_DEMO_REPORT");
    FILE *f = report != NULL && *report != '\0' ? fopen(report, "w") : NULL;
    if (f != NULL) {
        fprintf(f, "%s %lld\n%s %lld\n%s %lld\n", s.load, s.sent_load, s.memory, s.sent_memory, s.cpu, s.sent_cpu);
        fclose(f);
    }
    return rc == MQ_OK ? 0 : 1;
}
