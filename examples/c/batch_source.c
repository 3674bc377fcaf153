/* A batch MetricQ Source in C, shaped like a simulation: every time step
   computes a block of samples (a damped oscillator, sampled at 10 kHz) and
   hands the whole array to mq_source_send_batch in one call.

     cc -o batch_source batch_source.c $(pkg-config --cflags --libs libmetricq) -lm
     ./batch_source [URL [TOKEN [SECONDS]]]

   URL defaults to $METRICQ_URL, else amqp://guest:guest@127.0.0.1:5672/.
   SECONDS 0 (the default) runs until SIGINT/SIGTERM. If $METRICQ_DEMO_REPORT
   names a file, "<metric> <points sent>" is written there at exit. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <metricq.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define RATE 10000       /* samples per second   */
#define BLOCK 1000       /* samples per time step */
static const double PI = 3.14159265358979323846;

static volatile sig_atomic_t stopping = 0;
static void on_signal(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : getenv("METRICQ_URL");
    if (url == NULL) url = "amqp://guest:guest@127.0.0.1:5672/";
    const char *token = argc > 2 ? argv[2] : "source-c-batch";
    double seconds = argc > 3 ? atof(argv[3]) : 0;
    const char *metric = "example.c.batch.oscillator";

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    mq_source *src = mq_source_new(url, token, MQ_DEFAULT_TIMEOUT);
    if (src == NULL) {
        fprintf(stderr, "connect: %s\n", mq_last_error());
        return 1;
    }
    /* One chunk per time step: the block goes out as one message. */
    int rc = mq_source_set_chunk_size(src, NULL, BLOCK);
    if (rc == MQ_OK) {
        rc = mq_source_declare(src, metric,
                               "{\"unit\": \"m\", \"rate\": 10000, \"interval\": \"100μs\","
                               " \"description\": \"damped oscillator, one block per time step\"}",
                               MQ_DEFAULT_TIMEOUT);
    }
    if (rc != MQ_OK) {
        fprintf(stderr, "declare: %s: %s\n", mq_strerror(rc), mq_last_error());
        mq_source_free(src);
        return 1;
    }

    static int64_t times[BLOCK];
    static double values[BLOCK];
    const int64_t step = 1000000000 / RATE;
    int64_t start = mq_now(), t = start;
    long long sent = 0;
    int status = 0;
    while (!stopping && (seconds <= 0 || (double)(t - start) / 1e9 < seconds)) {
        for (int i = 0; i < BLOCK; i++, t += step) {
            double s = (double)(t - start) / 1e9;
            times[i] = t;
            values[i] = exp(-0.05 * fmod(s, 20.0)) * sin(2 * PI * 0.5 * s);
        }
        rc = mq_source_send_batch(src, metric, times, values, BLOCK, MQ_DEFAULT_TIMEOUT);
        if (rc != MQ_OK) {
            fprintf(stderr, "send_batch: %s: %s\n", mq_strerror(rc), mq_last_error());
            status = 1;
            break;
        }
        sent += BLOCK;
        /* The simulation runs in real time here; a real code would not wait. */
        int64_t ahead = t - mq_now();
        if (ahead > 0) {
            struct timespec pause = {ahead / 1000000000, ahead % 1000000000};
            nanosleep(&pause, NULL);
        }
    }
    rc = mq_source_stop(src, MQ_DEFAULT_TIMEOUT); /* publishes the rest */
    if (rc != MQ_OK) {
        fprintf(stderr, "stop: %s: %s\n", mq_strerror(rc), mq_last_error());
        status = 1;
    }
    mq_source_free(src);
    const char *report = getenv("METRICQ_DEMO_REPORT");
    if (report != NULL && *report != '\0') {
        FILE *f = fopen(report, "w");
        if (f != NULL) {
            fprintf(f, "%s %lld\n", metric, sent);
            fclose(f);
        }
    }
    printf("sent %lld points of %s\n", sent, metric);
    return status;
}
