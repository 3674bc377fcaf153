/*
 * metricq.h: the C interface of libmetricq, a MetricQ Source client.
 *
 * The one public header of libmetricq.so. It holds the fixed contract
 * (docs/C-API.md) and, marked "beyond the contract", what was added beside
 * it. Link with -lmetricq (pkg-config --cflags --libs libmetricq).
 *
 * Conventions, for every function here:
 *  - Status codes: MQ_OK (0) is success, every error is negative (MQ_ERR_*).
 *    After a failure mq_last_error() says why, on the calling thread.
 *  - No call crashes the host: NULL pointers, freed or forged handles and
 *    bad UTF-8 give MQ_ERR_INVALID; an internal failure MQ_ERR_INTERNAL.
 *  - Every function may be called from any thread, concurrently, also on the
 *    same source.
 *  - A timeout is in seconds, finite and > 0; anything else is
 *    MQ_ERR_INVALID. MQ_DEFAULT_TIMEOUT is the customary value.
 *  - Strings are NUL-terminated UTF-8. Strings passed in are copied or used
 *    only during the call; strings returned stay valid as documented.
 *  - Timestamps are int64_t nanoseconds since the Unix epoch, UTC.
 *
 * Inside the host process (the library carries a Go runtime):
 *  - Threads the host created may call everything; the library's own work
 *    runs on threads of its own.
 *  - Signal handlers the host installed, before or after loading the
 *    library, keep working, SIGINT included (a Python host still gets
 *    KeyboardInterrupt). Handlers installed by the host must use SA_ONSTACK
 *    for signals the Go runtime also handles (e.g. SIGSEGV, SIGPIPE).
 *  - NOT supported: using the library in a child created by fork() after
 *    the library was loaded (the Go runtime does not survive fork()). In
 *    such a child every call fails at once with MQ_ERR_INVALID (NULL for
 *    the constructors; mq_source_free does nothing) and mq_last_error()
 *    says why; the parent is unaffected. Create sources after forking, or
 *    exec. Also unsupported: a second
 *    Go runtime in the process (another Go c-shared library), which the Go
 *    toolchain does not support.
 */
#ifndef METRICQ_H
#define METRICQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this header; mq_version() gives the library's at run time. */
#define MQ_VERSION_MAJOR 0
#define MQ_VERSION_MINOR 1
#define MQ_VERSION_PATCH 0
#define MQ_VERSION_STRING "0.1.0"
/* MAJOR*10000 + MINOR*100 + PATCH, for #if comparisons. */
#define MQ_VERSION_NUMBER (MQ_VERSION_MAJOR * 10000 + MQ_VERSION_MINOR * 100 + MQ_VERSION_PATCH)

typedef struct mq_source mq_source;     /* opaque handle to one Source */

/* Status codes: 0 is success, every error is negative. */
#define MQ_OK              0
#define MQ_ERR_INVALID    -1  /* bad argument: NULL pointer, bad metric name, bad JSON,
                                 bad chunk size, bad timeout, a handle already freed   */
#define MQ_ERR_TIMEOUT    -2  /* the call could not complete in the time given         */
#define MQ_ERR_CONNECT    -3  /* broker unreachable, login refused, TLS failure, or the
                                 connection was lost and could not be restored         */
#define MQ_ERR_RPC        -4  /* the manager answered with an error or an unreadable reply */
#define MQ_ERR_UNDECLARED -5  /* send for a metric this source never declared          */
#define MQ_ERR_ORDER      -6  /* timestamp not strictly greater than the metric's last one */
#define MQ_ERR_PUBLISH    -7  /* publishing failed; accepted points stay buffered      */
#define MQ_ERR_STOPPED    -8  /* the source was stopped                                */
#define MQ_ERR_INTERNAL   -9  /* an internal failure that was contained (a bug)        */

#define MQ_DEFAULT_TIMEOUT 60.0   /* seconds, as in SynchronousSource */

/* Beyond the contract: defaults and limits. */
#define MQ_DEFAULT_CHUNK_SIZE   1        /* points per chunk, as in the Python Source  */
#define MQ_DEFAULT_MAX_BUFFERED 1048576  /* points accepted but not yet confirmed by the
                                            broker (about 16 MiB), or more with many
                                            metrics; see mq_source_set_max_buffered    */
#define MQ_MAX_NAME_LENGTH      255      /* bytes of a metric name                     */

const char *mq_version(void);          /* e.g. "libmetricq/0.1.0"                        */
const char *mq_strerror(int status);   /* static text for a status code                  */
const char *mq_last_error(void);       /* thread-local: detail of this thread's last
                                          failed call, "" if none; never holds a password */
int64_t     mq_now(void);              /* nanoseconds since the Unix epoch, UTC          */

/* Connects to the management URL, registers `token` with the manager, opens the data
   connection and returns once the source is ready (or after `timeout` seconds).
   Returns NULL on failure; mq_last_error() says why.
   (Equivalent to mq_source_create + mq_source_connect, freeing on failure.) */
mq_source *mq_source_new(const char *url, const char *token, double timeout);

/* Declares one metric. metadata_json is a JSON object or NULL (= {}). */
int mq_source_declare(mq_source *src, const char *metric, const char *metadata_json,
                      double timeout);

/* Declares several: a JSON object {name: metadata, ...} or an array of names. */
int mq_source_declare_many(mq_source *src, const char *metrics_json, double timeout);

/* metric == NULL: the source's default, used by metrics declared afterwards.
   chunk_size == 0: automatic chunking off, points go out on mq_source_flush only.
   chunk_size < 0: MQ_ERR_INVALID. The default is 1, as in the Python Source.
   (Also MQ_ERR_INVALID: a chunk size above the source's buffer bound, which
   could never fill.) */
int mq_source_set_chunk_size(mq_source *src, const char *metric, int64_t chunk_size);

/* Accepts one point. MQ_OK means accepted: it will be published, in order, without
   the caller doing anything more. Any error means NOT accepted: nothing was buffered,
   so the caller may retry the same point without creating a duplicate. Waits at most
   `timeout` seconds, and only when the library's bounded buffer is full. */
int mq_source_send(mq_source *src, const char *metric, int64_t time_ns, double value,
                   double timeout);

/* Accepts count points of one metric at once, all or none. time_ns must be strictly
   increasing and greater than the metric's last accepted timestamp.
   (count == 0 is a no-op; the arrays may then be NULL.) */
int mq_source_send_batch(mq_source *src, const char *metric, const int64_t *time_ns,
                         const double *values, size_t count, double timeout);

/* Returns once every point accepted before the call has been handed to the broker. */
int mq_source_flush(mq_source *src, double timeout);

/* Copies the JSON text of the configuration the manager sent (at registration, or the
   latest "config" RPC) into buf, snprintf-style. Returns its length without the NUL,
   or a negative status. (buf may be NULL when size is 0.) */
int mq_source_config(mq_source *src, char *buf, size_t size);

/* Flushes (within timeout), then disconnects. Idempotent. Later calls on src return
   MQ_ERR_STOPPED. Returns within timeout whatever the network or the broker do;
   points the broker has not confirmed by then are given up, counted in
   points_dropped and named in mq_last_error() ("N points not delivered"). */
int mq_source_stop(mq_source *src, double timeout);

/* Stops if needed and releases the handle. NULL is a no-op. Any later call with this
   handle returns MQ_ERR_INVALID; it never crashes.
   (The stop waits at most 10 seconds for the flush.) */
void mq_source_free(mq_source *src);

/* ======================================================================== */
/* Beyond the contract                                                        */
/* ======================================================================== */

/* --- Creating in two steps ------------------------------------------------
   mq_source_create checks url and token and returns a handle without any I/O;
   the setters below marked "before connecting" work only now; then
   mq_source_connect connects as mq_source_new does. A failed or timed-out
   connect leaves the source unconnected: mq_source_connect may be called
   again. A source stopped before it connected stays stopped. */
mq_source *mq_source_create(const char *url, const char *token);
int mq_source_connect(mq_source *src, double timeout);

/* Bounds the points held until the broker confirms them. When the bound is
   reached, mq_source_send waits up to its timeout for space and then fails
   with MQ_ERR_TIMEOUT, accepting nothing. points >= 1. Before connecting
   only (MQ_ERR_INVALID after).
   Unset, the bound is MQ_DEFAULT_MAX_BUFFERED or twice the sum of the
   declared metrics' chunk sizes, whichever is larger, so that every
   metric's open chunk fits (100,000 metrics of chunk size 100: 20,000,000
   points), with as much again for chunks on their way. A bound set here
   stays as set; if the open chunks fill it, they are published before
   they fill (smaller messages, logged) rather than every send waiting for
   space nothing would free. */
int mq_source_set_max_buffered(mq_source *src, int64_t points);

/* The version the source reports in its replies to the manager's
   "discover" ("version"; the Python reference's client_version): the
   host application's, e.g. "1.2.3". Valid UTF-8, at most 256 bytes, no
   control characters. Unset: no "version" in the reply. Before connecting
   only (MQ_ERR_INVALID after). */
int mq_source_set_client_version(mq_source *src, const char *version);

/* How long a lost connection (management or data) may stay down while the
   source tries to restore it (default 600 s, the reference's
   connection_timeout). When it passes, the source stops on its own: every
   later call, and mq_source_wait, fails with MQ_ERR_CONNECT, mq_last_error()
   saying that the source stopped and why. Seconds, finite, > 0. Before
   connecting only (MQ_ERR_INVALID after). */
int mq_source_set_reconnect_timeout(mq_source *src, double seconds);

/* The AMQP heartbeat of both connections, in whole seconds, 1 to 65535
   (default 6; the URL parameter heartbeat=<seconds> sets the same). A
   silent peer (a pulled cable, a frozen VM) is noticed after about 1.5
   intervals and the reconnect begins. Shorter notices a dead network
   sooner but costs a few bytes per interval and risks giving up a
   connection whose broker is merely stalled; longer leaves a dead
   connection, and the exclusive queue the broker keeps for it, in place
   longer. The broker may lower it. Before connecting only (MQ_ERR_INVALID
   after). */
int mq_source_set_heartbeat(mq_source *src, double seconds);

/* --- Learning that a source stopped ------------------------------------------
   Blocks until the source has stopped, or `timeout` seconds passed. A source
   stops by mq_source_stop / mq_source_free, or on its own: its reconnect
   timeout passed, or its IntervalSource update asked it to. Returns MQ_OK
   when it was stopped by a call (or before it ever connected); the cause,
   with mq_last_error() saying why, when it stopped on its own (e.g.
   MQ_ERR_CONNECT: a connection lost for good); MQ_ERR_TIMEOUT while it
   still runs (also: never connected and not stopped). Sends nothing; may
   be called from any thread, any number of times, also with a short
   timeout as a poll. */
int mq_source_wait(mq_source *src, double timeout);

/* --- Configuration hook ----------------------------------------------------
   Called with the configuration's JSON text: during mq_source_connect with
   the configuration from the manager's register reply, then on every
   "config" RPC. It runs on a library thread, one call at a time per
   source, and may call mq_source_declare, mq_source_set_chunk_size,
   mq_source_set_period and mq_source_config on src (typically: read a rate,
   set the period, declare the metrics). config_json is valid during the call.
   Return 0 to accept the configuration; anything else refuses it: a
   connect in progress fails with MQ_ERR_RPC, a config RPC is answered with
   an error. mq_source_stop on src from inside the hook is MQ_ERR_INVALID
   (it would wait for the hook); mq_source_free is allowed.
   fn == NULL removes the hook. Set it before connecting to see the first
   configuration; it may be replaced at any time. */
typedef int (*mq_config_fn)(mq_source *src, const char *config_json, void *user);
int mq_source_set_config_handler(mq_source *src, mq_config_fn fn, void *user);

/* --- IntervalSource --------------------------------------------------------
   Runs the IntervalSource schedule on a connected source and blocks the
   calling thread until the source stops. update is called on a library
   thread: first at once, then every `period` seconds on a fixed grid (no
   drift; missed deadlines are skipped, never run in a burst). It usually
   calls mq_source_send. Its return value:
     0               carry on;
     MQ_ERR_PUBLISH  logged, carry on (as PublishFailed in the Python
                     IntervalSource);
     anything else   stop the source (flushing what was sent), as an
                     exception from update does in Python.
   update may call mq_source_stop or mq_source_free on src (the stop does not
   wait for update to return) and mq_source_set_period.
   Returns MQ_OK when the source was stopped with mq_source_stop or
   mq_source_free (from any thread, or from update); MQ_ERR_STOPPED when
   update returned non-zero (mq_last_error() gives the value); the source's
   error when it stopped itself (e.g. MQ_ERR_CONNECT: connection lost for
   good). It returns only after the last call of update has returned, so
   `user` may be released then. Once per source: MQ_ERR_INVALID when already
   running. */
typedef int (*mq_update_fn)(mq_source *src, void *user);
int mq_source_run_interval(mq_source *src, double period, mq_update_fn update,
                           void *user);

/* Changes the period of mq_source_run_interval, from the next deadline on
   (seconds, finite, > 0). Also valid before mq_source_run_interval, e.g. in
   the configuration hook; the period given to mq_source_run_interval
   replaces it then. */
int mq_source_set_period(mq_source *src, double period);

/* --- Statistics ------------------------------------------------------------
   Counters since the source connected. Fields may be added at the end in
   later versions: pass sizeof(mq_stats); the library fills at most that
   many bytes. Valid until mq_source_free, also after stop (all zero before
   connecting). */
typedef struct mq_stats {
    uint64_t points_accepted;   /* taken by mq_source_send / _send_batch           */
    uint64_t points_published;  /* handed to the broker (republished ones again)   */
    uint64_t points_confirmed;  /* confirmed by the broker                          */
    uint64_t chunks_published;
    uint64_t chunks_confirmed;
    uint64_t bytes_published;   /* DataChunk bytes                                  */
    uint64_t buffered_points;   /* accepted, not yet confirmed (the bounded buffer;
                                   see "Staging" below)                          */
    uint64_t reconnects;        /* connections restored after a failure             */
    uint64_t publish_errors;    /* failed publishes and broker rejections           */
    uint64_t buffer_full_waits; /* sends that had to wait for buffer space          */
    uint64_t blocked_events;    /* times the broker blocked publishing              */
    uint64_t blocked;           /* 1 while the broker blocks publishing             */
    /* Since 0.1.0, after the fields above: */
    uint64_t chunks_republished;   /* republished after a lost connection: may
                                      reach a sink twice (docs/reliability.md) */
    uint64_t buffer_full_timeouts; /* sends refused: buffer full until timeout */
    uint64_t points_dropped;       /* accepted, never confirmed: the source
                                      stopped first (stop timeout in an outage) */
    uint64_t management_reconnects;/* management connections restored          */
    uint64_t data_connected;       /* 1 while the data connection is up        */
    uint64_t management_connected; /* 1 while the management connection is up  */
} mq_stats;
int mq_source_stats(mq_source *src, mq_stats *stats, size_t size);

/* --- Staging ----------------------------------------------------------------
   How mq_source_send stays cheap (~40 ns a point at chunk sizes in the
   hundreds): a call from C into the library's Go runtime costs more than
   everything else a point needs, so points are staged in C, per metric,
   and cross into Go a batch at a time (at most 512, never more than the
   metric's open chunk still lacks, so a chunk still closes at the point
   that fills it). A metric's staging memory is allocated when it is
   first sent to, sized by its chunk size (at most 8 KiB); a metric never
   sent to has none. Nothing of it shows in the rules above: a staged
   point is accepted (counted in points_accepted from the next
   mq_source_stats), the order rule sees it, and flush, stop, free, a
   smaller chunk size and a source stopping on its own all hand staged
   points over first. Buffer space is reserved before a point is staged,
   up to 512 points at a time per metric (at most 1/64 of the bound, and
   less with many metrics, so that all of it stays within half the bound):
   buffered_points counts that reserved space too, so the bound holds
   exactly, and a flush gives back what no point uses. At chunk size 1
   every point crosses into Go once (its chunk is published at once), as
   without staging. */

/* --- Metric handles --------------------------------------------------------
   The fastest way to send: a handle stands for one metric of one source,
   so a send by handle does no name lookup. mq_source_metric returns the
   handle of `metric` (the same handle for the same name every time), or
   NULL with mq_last_error() set: a bad source handle, a bad name. The
   metric need not be declared yet; sends by the handle are
   MQ_ERR_UNDECLARED until it is. A handle stays valid until
   mq_source_free(src) and needs no freeing of its own. A handle of a
   freed source, NULL, or any value mq_source_metric did not return is
   MQ_ERR_INVALID (with a text in mq_last_error()), never a crash.
   Otherwise mq_metric_send and mq_metric_send_batch behave exactly as
   mq_source_send and mq_source_send_batch with the metric's name: the
   same rules, staging and errors (n == 0 is a no-op). */
typedef struct mq_metric mq_metric;     /* opaque handle to one metric of a source */
mq_metric *mq_source_metric(mq_source *src, const char *metric);
int mq_metric_send(mq_metric *m, int64_t time_ns, double value, double timeout);
int mq_metric_send_batch(mq_metric *m, const int64_t *time_ns, const double *values,
                         size_t n, double timeout);

/* --- Logging ---------------------------------------------------------------
   The library logs connection trouble, lost points and the like. By
   default warnings and errors go to stderr, one line each. The environment
   variable METRICQ_LOG (debug, info, warn, error, off), read when the
   library is loaded, sets the initial level; mq_set_log_level changes it.
   mq_set_log_handler sends the lines at or above the level to fn instead
   (fn == NULL: back to stderr). fn may be called from any library thread,
   concurrently; message is valid during the call and never holds a
   password. fn must not call mq_set_log_handler. A handler being replaced
   may still receive the lines logged at that moment, so keep it callable. */
#define MQ_LOG_DEBUG 10
#define MQ_LOG_INFO  20
#define MQ_LOG_WARN  30
#define MQ_LOG_ERROR 40
#define MQ_LOG_OFF   100
typedef void (*mq_log_fn)(int level, const char *message, void *user);
void mq_set_log_handler(mq_log_fn fn, void *user);
/* level: one of MQ_LOG_*; other values are MQ_ERR_INVALID. */
int mq_set_log_level(int level);

#ifdef __cplusplus
}
#endif

#endif /* METRICQ_H */
