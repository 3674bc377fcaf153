/* Staging of points in C before they cross into Go (stage.c). The public
   entry points (entry_points.c) call these for the calls that send, or
   that must first hand staged points over. */
#ifndef LIBMETRICQ_STAGE_H
#define LIBMETRICQ_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "metricq.h"
#include "capi_internal.h"

LIBMQ_HIDDEN int libmq_stage_send(uintptr_t handle, const char *metric, int64_t time_ns, double value,
                                  double timeout);
LIBMQ_HIDDEN int libmq_stage_send_batch(uintptr_t handle, const char *metric, const int64_t *time_ns,
                                        const double *values, size_t count, double timeout);
/* The metric handle (mq_metric *) of a metric of the source, 0 with
   mq_last_error set on failure; and the sends by such a handle. */
LIBMQ_HIDDEN uintptr_t libmq_stage_metric(uintptr_t handle, const char *metric);
LIBMQ_HIDDEN int libmq_stage_metric_send(uintptr_t metric, int64_t time_ns, double value, double timeout);
LIBMQ_HIDDEN int libmq_stage_metric_send_batch(uintptr_t metric, const int64_t *time_ns, const double *values,
                                               size_t count, double timeout);
LIBMQ_HIDDEN int libmq_stage_set_chunk_size(uintptr_t handle, const char *metric, int64_t chunk_size);
LIBMQ_HIDDEN int libmq_stage_flush(uintptr_t handle, double timeout);
LIBMQ_HIDDEN int libmq_stage_stats(uintptr_t handle, mq_stats *stats, size_t size);
LIBMQ_HIDDEN void libmq_stage_free(uintptr_t handle);

#endif
