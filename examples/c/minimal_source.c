/* A minimal MetricQ Source in C: connect, declare one metric, send a point
   every 100 ms, stop.

     cc -o minimal_source minimal_source.c $(pkg-config --cflags --libs libmetricq)
     ./minimal_source [URL [TOKEN [COUNT]]]

   URL defaults to $METRICQ_URL, else amqp://guest:guest@127.0.0.1:5672/. */
#define _POSIX_C_SOURCE 200809L
#include <metricq.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : getenv("METRICQ_URL");
    if (url == NULL) url = "amqp://guest:guest@127.0.0.1:5672/";
    const char *token = argc > 2 ? argv[2] : "source-c-minimal";
    long count = argc > 3 ? atol(argv[3]) : 50;
    const char *metric = "example.c.minimal.counter";

    /* Registers with the manager and opens the data connection. */
    mq_source *src = mq_source_new(url, token, MQ_DEFAULT_TIMEOUT);
    if (src == NULL) {
        fprintf(stderr, "connect: %s\n", mq_last_error());
        return 1;
    }
    int rc = mq_source_declare(src, metric, "{\"unit\": \"\", \"rate\": 10, \"description\": \"counts up\"}",
                               MQ_DEFAULT_TIMEOUT);
    if (rc != MQ_OK) {
        fprintf(stderr, "declare: %s: %s\n", mq_strerror(rc), mq_last_error());
        mq_source_free(src);
        return 1;
    }
    for (long i = 0; i < count; i++) {
        /* Returns at once: the point is buffered and published in the
           background (one point per chunk by default). */
        rc = mq_source_send(src, metric, mq_now(), (double)i, MQ_DEFAULT_TIMEOUT);
        if (rc != MQ_OK) {
            fprintf(stderr, "send: %s: %s\n", mq_strerror(rc), mq_last_error());
        }
        struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    /* Publishes what is still buffered, then disconnects. */
    rc = mq_source_stop(src, MQ_DEFAULT_TIMEOUT);
    if (rc != MQ_OK) {
        fprintf(stderr, "stop: %s: %s\n", mq_strerror(rc), mq_last_error());
    }
    mq_source_free(src);
    return rc == MQ_OK ? 0 : 1;
}
