// metricq.hpp: the C++ interface of libmetricq, a MetricQ Source client.
//
// Header-only, C++17 (std::span overloads with C++20), on top of the C API in
// <metricq.h>; link with -lmetricq (CMake: libmetricq::metricq; pkg-config:
// libmetricq).
//
//     #include <metricq.hpp>
//
//     metricq::SynchronousSource src(url, "source-example");   // connects
//     src.declare("example.temperature", R"({"unit": "degC", "rate": 10})");
//     src.send("example.temperature", std::chrono::system_clock::now(), 21.5);
//     src.stop();               // flushes and disconnects (the destructor too)
//
// Conventions:
//  - Every failure throws metricq::Error (a std::runtime_error) with code()
//    the C status (MQ_ERR_*) and what() the text of mq_last_error(); the
//    subclasses (InvalidError, TimeoutError, ...) name the codes.
//  - Timeouts are std::chrono durations (any unit; a floating-point count of
//    seconds underneath) and default to 60 s (MQ_DEFAULT_TIMEOUT).
//  - Timestamps are std::chrono::system_clock time points or int64_t
//    nanoseconds since the Unix epoch (UTC).
//  - Every method may be called from any thread, also concurrently on the
//    same source, as with the C API. Callbacks (configuration handler,
//    interval update, log handler) run on library threads; an exception they
//    throw is caught at the C boundary, never lost in a crash.
#ifndef METRICQ_HPP
#define METRICQ_HPP

#include <metricq.h>

#if !defined(__cplusplus) || (__cplusplus < 201703L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 201703L))
#error "metricq.hpp needs C++17 or later (e.g. -std=c++17)"
#endif

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>
#if __cplusplus >= 202002L && __has_include(<span>)
#include <span>
#define METRICQ_HPP_HAS_SPAN 1
#endif

namespace metricq {

// ---------------------------------------------------------------------------
// Errors

// A failed call: code() is the C status (MQ_ERR_*), what() the text of
// mq_last_error() at the time (or the status' description when that is empty).
class Error : public std::runtime_error {
public:
    Error(int code, const std::string &message) : std::runtime_error(message), code_(code) {}
    int code() const noexcept { return code_; }

private:
    int code_;
};

class InvalidError : public Error {      // MQ_ERR_INVALID
public:
    using Error::Error;
};
class TimeoutError : public Error {      // MQ_ERR_TIMEOUT
public:
    using Error::Error;
};
class ConnectError : public Error {      // MQ_ERR_CONNECT
public:
    using Error::Error;
};
class RpcError : public Error {          // MQ_ERR_RPC
public:
    using Error::Error;
};
class UndeclaredError : public Error {   // MQ_ERR_UNDECLARED
public:
    using Error::Error;
};
class OrderError : public Error {        // MQ_ERR_ORDER
public:
    using Error::Error;
};
class PublishError : public Error {      // MQ_ERR_PUBLISH
public:
    using Error::Error;
};
class StoppedError : public Error {      // MQ_ERR_STOPPED
public:
    using Error::Error;
};
class InternalError : public Error {     // MQ_ERR_INTERNAL
public:
    using Error::Error;
};

// Static description of a status code (mq_strerror).
inline std::string strerror(int status) {
    const char *s = mq_strerror(status);
    return s ? s : "";
}

// This thread's last error text (mq_last_error), "" if none.
inline std::string last_error() {
    const char *s = mq_last_error();
    return s ? s : "";
}

// Throws the Error subclass for a negative status, with message (or, when
// empty, the status' description).
[[noreturn]] inline void throw_error(int status, std::string message) {
    if (message.empty()) message = strerror(status);
    switch (status) {
    case MQ_ERR_INVALID: throw InvalidError(status, message);
    case MQ_ERR_TIMEOUT: throw TimeoutError(status, message);
    case MQ_ERR_CONNECT: throw ConnectError(status, message);
    case MQ_ERR_RPC: throw RpcError(status, message);
    case MQ_ERR_UNDECLARED: throw UndeclaredError(status, message);
    case MQ_ERR_ORDER: throw OrderError(status, message);
    case MQ_ERR_PUBLISH: throw PublishError(status, message);
    case MQ_ERR_STOPPED: throw StoppedError(status, message);
    case MQ_ERR_INTERNAL: throw InternalError(status, message);
    default: throw Error(status, message);
    }
}

// Returns status when it is not negative, else throws with mq_last_error().
inline int check(int status) {
    if (status < 0) throw_error(status, last_error());
    return status;
}

// ---------------------------------------------------------------------------
// Time

using Clock = std::chrono::system_clock;
using TimePoint = Clock::time_point;
// Timeouts and periods: seconds as a double, from any std::chrono duration.
using Duration = std::chrono::duration<double>;

inline constexpr std::chrono::seconds default_timeout{60};   // MQ_DEFAULT_TIMEOUT

// Nanoseconds since the Unix epoch, UTC (mq_now).
inline std::int64_t now_ns() noexcept { return mq_now(); }

// A system_clock time point as nanoseconds since the Unix epoch.
template <class D>
constexpr std::int64_t to_ns(std::chrono::time_point<Clock, D> t) noexcept {
    return static_cast<std::int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}

// Nanoseconds since the Unix epoch as a system_clock time point (in the
// clock's resolution).
inline TimePoint from_ns(std::int64_t ns) noexcept {
    return TimePoint(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}

// ---------------------------------------------------------------------------
// Library-wide

// The library's version, e.g. "libmetricq/0.1.0" (mq_version).
inline std::string version() {
    const char *s = mq_version();
    return s ? s : "";
}

// MQ_LOG_DEBUG, MQ_LOG_INFO, MQ_LOG_WARN, MQ_LOG_ERROR or MQ_LOG_OFF.
inline void set_log_level(int level) { check(mq_set_log_level(level)); }

namespace detail {

// A C string argument: a const char* or a std::string (which must outlive
// the call, as any argument does).
class cstr {
public:
    cstr(const char *s) noexcept : p_(s) {}                  // NOLINT: implicit by design
    cstr(const std::string &s) noexcept : p_(s.c_str()) {}   // NOLINT
    const char *get() const noexcept { return p_; }

private:
    const char *p_;
};

inline double seconds(Duration d) noexcept { return d.count(); }

// send_batch of arrays of different lengths: refused before the C call.
inline void same_size(std::size_t times, std::size_t values) {
    if (times != values)
        throw InvalidError(MQ_ERR_INVALID, "send_batch: " + std::to_string(times) + " timestamps but " +
                                               std::to_string(values) + " values");
}

// Whether a callable is an empty std::function or a null function pointer.
template <class F>
bool is_empty(const F &) noexcept {
    return false;
}
template <class Sig>
bool is_empty(const std::function<Sig> &f) noexcept {
    return !f;
}
template <class R, class... A>
bool is_empty(R (*f)(A...)) noexcept {
    return f == nullptr;
}

// Callbacks handed to the C library are looked up by id in a registry that
// owns them through shared_ptr: a call in progress keeps its callback alive
// even when it is replaced or its source freed meanwhile. The registries are
// never destroyed (the library may call back during static destruction).
template <class T>
class registry {
public:
    static registry &get() {
        static registry *r = new registry;   // deliberately leaked
        return *r;
    }
    std::uintptr_t add(std::shared_ptr<T> item) {
        std::lock_guard<std::mutex> lock(mu_);
        std::uintptr_t id = ++next_;
        items_.emplace(id, std::move(item));
        return id;
    }
    std::shared_ptr<T> find(std::uintptr_t id) {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = items_.find(id);
        return it == items_.end() ? nullptr : it->second;
    }
    void replace(std::uintptr_t id, std::shared_ptr<T> item) {
        std::shared_ptr<T> old;
        {
            std::lock_guard<std::mutex> lock(mu_);
            auto it = items_.find(id);
            if (it == items_.end()) return;
            old = std::exchange(it->second, std::move(item));
        }
    }
    void remove(std::uintptr_t id) {
        std::shared_ptr<T> old;   // released outside the lock
        std::lock_guard<std::mutex> lock(mu_);
        auto it = items_.find(id);
        if (it == items_.end()) return;
        old = std::move(it->second);
        items_.erase(it);
    }

private:
    std::mutex mu_;
    std::uintptr_t next_ = 0;
    std::unordered_map<std::uintptr_t, std::shared_ptr<T>> items_;
};

inline void *id_ptr(std::uintptr_t id) noexcept { return reinterpret_cast<void *>(id); }
inline std::uintptr_t ptr_id(void *p) noexcept { return reinterpret_cast<std::uintptr_t>(p); }

struct log_slot {
    std::mutex mu;
    std::shared_ptr<std::function<void(int, const std::string &)>> fn;
};
inline log_slot &log_state() {
    static log_slot *s = new log_slot;   // deliberately leaked
    return *s;
}
inline void log_trampoline(int level, const char *message, void *) {
    auto &s = log_state();
    std::shared_ptr<std::function<void(int, const std::string &)>> fn;
    {
        std::lock_guard<std::mutex> lock(s.mu);
        fn = s.fn;
    }
    if (!fn) return;
    try {
        (*fn)(level, message ? std::string(message) : std::string());
    } catch (...) {
        // A log handler cannot report failure; the line is lost.
    }
}

}  // namespace detail

// Sends the library's log lines (at or above the log level) to fn(level,
// message) instead of stderr; nullptr (or an empty function) restores
// stderr. fn may be called from any library thread, concurrently; it must
// not call set_log_handler. A replaced handler may still finish a call in
// progress (its copy is kept alive until then).
inline void set_log_handler(std::function<void(int level, const std::string &message)> fn) {
    auto &s = detail::log_state();
    std::shared_ptr<std::function<void(int, const std::string &)>> old;
    if (fn) {
        auto p = std::make_shared<std::function<void(int, const std::string &)>>(std::move(fn));
        {
            std::lock_guard<std::mutex> lock(s.mu);
            old = std::exchange(s.fn, std::move(p));
        }
        mq_set_log_handler(detail::log_trampoline, nullptr);
    } else {
        mq_set_log_handler(nullptr, nullptr);
        std::lock_guard<std::mutex> lock(s.mu);
        old = std::exchange(s.fn, nullptr);
    }
}

using Stats = mq_stats;

// ---------------------------------------------------------------------------
// Metric: one metric of a source, for the fastest sends

// The handle of one metric of a source (SourceRef::metric, mq_source_metric):
// its sends skip the look-up by name. Copyable, owns nothing: valid until
// the source is freed; after that (or for a default-constructed Metric)
// every send throws InvalidError, as the C library checks the handle.
// Sends behave exactly as SourceRef::send and send_batch with the name.
class Metric {
public:
    explicit Metric(mq_metric *handle = nullptr) noexcept : h_(handle) {}

    // The C handle, for calls this header does not wrap.
    mq_metric *handle() const noexcept { return h_; }
    explicit operator bool() const noexcept { return h_ != nullptr; }

    // Sends one point at time_ns (any integer type: nanoseconds since the
    // Unix epoch); see mq_metric_send.
    template <class Int, std::enable_if_t<std::is_integral_v<Int> && !std::is_same_v<Int, bool>, int> = 0>
    void send(Int time_ns, double value, Duration timeout = default_timeout) const {
        check(mq_metric_send(h_, static_cast<std::int64_t>(time_ns), value, detail::seconds(timeout)));
    }
    // Sends one point at a system_clock time point.
    template <class D>
    void send(std::chrono::time_point<Clock, D> time, double value, Duration timeout = default_timeout) const {
        check(mq_metric_send(h_, to_ns(time), value, detail::seconds(timeout)));
    }
    // Sends one point stamped now (mq_now).
    void send(double value, Duration timeout = default_timeout) const {
        check(mq_metric_send(h_, mq_now(), value, detail::seconds(timeout)));
    }

    // Sends count points at once, all or none; times strictly increasing.
    void send_batch(const std::int64_t *time_ns, const double *values, std::size_t count,
                    Duration timeout = default_timeout) const {
        check(mq_metric_send_batch(h_, time_ns, values, count, detail::seconds(timeout)));
    }
    void send_batch(const std::vector<std::int64_t> &time_ns, const std::vector<double> &values,
                    Duration timeout = default_timeout) const {
        detail::same_size(time_ns.size(), values.size());
        send_batch(time_ns.data(), values.data(), values.size(), timeout);
    }
#ifdef METRICQ_HPP_HAS_SPAN
    void send_batch(std::span<const std::int64_t> time_ns, std::span<const double> values,
                    Duration timeout = default_timeout) const {
        detail::same_size(time_ns.size(), values.size());
        send_batch(time_ns.data(), values.data(), values.size(), timeout);
    }
#endif

private:
    mq_metric *h_;
};

// ---------------------------------------------------------------------------
// SourceRef: the operations on a source, without ownership

// A non-owning reference to a source: what the callbacks receive, and the
// base of SynchronousSource (which owns its handle). Copyable; valid as long
// as the source it refers to. Calls on a freed or moved-from source throw
// InvalidError (the C library checks handles; nothing crashes).
class SourceRef {
public:
    explicit SourceRef(mq_source *handle = nullptr) noexcept : h_(handle) {}

    // The C handle, for calls this header does not wrap.
    mq_source *handle() const noexcept { return h_; }
    explicit operator bool() const noexcept { return h_ != nullptr; }

    // Declares one metric; metadata_json is a JSON object.
    void declare(detail::cstr metric, detail::cstr metadata_json = "{}", Duration timeout = default_timeout) {
        check(mq_source_declare(h_, metric.get(), metadata_json.get(), detail::seconds(timeout)));
    }

    // Declares several: a JSON object {name: metadata, ...} or an array of names.
    void declare_many(detail::cstr metrics_json, Duration timeout = default_timeout) {
        check(mq_source_declare_many(h_, metrics_json.get(), detail::seconds(timeout)));
    }

    // Points per chunk for metrics declared afterwards (0: only on flush).
    void set_chunk_size(std::int64_t chunk_size) { check(mq_source_set_chunk_size(h_, nullptr, chunk_size)); }
    // Points per chunk for one declared metric.
    void set_chunk_size(detail::cstr metric, std::int64_t chunk_size) {
        check(mq_source_set_chunk_size(h_, metric.get(), chunk_size));
    }

    // The handle of a metric (mq_source_metric), the same for the same name
    // every time: sends by it skip the look-up by name. The metric need not
    // be declared yet (its sends throw UndeclaredError until it is).
    Metric metric(detail::cstr name) const {
        mq_metric *m = mq_source_metric(h_, name.get());
        if (m == nullptr) throw_error(MQ_ERR_INVALID, last_error());
        return Metric(m);
    }

    // Sends one point at time_ns (any integer type: nanoseconds since the
    // Unix epoch). Returns once the point is accepted; see mq_source_send.
    template <class Int, std::enable_if_t<std::is_integral_v<Int> && !std::is_same_v<Int, bool>, int> = 0>
    void send(detail::cstr metric, Int time_ns, double value, Duration timeout = default_timeout) {
        check(mq_source_send(h_, metric.get(), static_cast<std::int64_t>(time_ns), value, detail::seconds(timeout)));
    }
    // Sends one point at a system_clock time point.
    template <class D>
    void send(detail::cstr metric, std::chrono::time_point<Clock, D> time, double value,
              Duration timeout = default_timeout) {
        check(mq_source_send(h_, metric.get(), to_ns(time), value, detail::seconds(timeout)));
    }
    // Sends one point stamped now (mq_now).
    void send(detail::cstr metric, double value, Duration timeout = default_timeout) {
        check(mq_source_send(h_, metric.get(), mq_now(), value, detail::seconds(timeout)));
    }

    // Sends count points of one metric at once, all or none; times strictly
    // increasing, in nanoseconds since the Unix epoch.
    void send_batch(detail::cstr metric, const std::int64_t *time_ns, const double *values, std::size_t count,
                    Duration timeout = default_timeout) {
        check(mq_source_send_batch(h_, metric.get(), time_ns, values, count, detail::seconds(timeout)));
    }
    void send_batch(detail::cstr metric, const std::vector<std::int64_t> &time_ns, const std::vector<double> &values,
                    Duration timeout = default_timeout) {
        detail::same_size(time_ns.size(), values.size());
        send_batch(metric, time_ns.data(), values.data(), values.size(), timeout);
    }
    template <class D>
    void send_batch(detail::cstr metric, const std::vector<std::chrono::time_point<Clock, D>> &times,
                    const std::vector<double> &values, Duration timeout = default_timeout) {
        detail::same_size(times.size(), values.size());
        std::vector<std::int64_t> ns;
        ns.reserve(times.size());
        for (const auto &t : times) ns.push_back(to_ns(t));
        send_batch(metric, ns.data(), values.data(), values.size(), timeout);
    }
#ifdef METRICQ_HPP_HAS_SPAN
    void send_batch(detail::cstr metric, std::span<const std::int64_t> time_ns, std::span<const double> values,
                    Duration timeout = default_timeout) {
        detail::same_size(time_ns.size(), values.size());
        send_batch(metric, time_ns.data(), values.data(), values.size(), timeout);
    }
#endif

    // Returns once every point accepted before the call went to the broker.
    void flush(Duration timeout = default_timeout) { check(mq_source_flush(h_, detail::seconds(timeout))); }

    // Flushes (within timeout), then disconnects. Idempotent; later calls on
    // the source throw StoppedError.
    void stop(Duration timeout = default_timeout) { check(mq_source_stop(h_, detail::seconds(timeout))); }

    // The JSON text of the configuration the manager sent.
    std::string config() const {
        std::vector<char> buf(256);
        for (;;) {
            int n = check(mq_source_config(h_, buf.data(), buf.size()));
            if (static_cast<std::size_t>(n) < buf.size()) return std::string(buf.data(), static_cast<std::size_t>(n));
            buf.resize(static_cast<std::size_t>(n) + 1);   // it grew: try again
        }
    }

    // Counters since the source connected (mq_source_stats).
    Stats stats() const {
        Stats s{};
        check(mq_source_stats(h_, &s, sizeof s));
        return s;
    }

    // The IntervalSource period (see SynchronousSource::run_interval).
    void set_period(Duration period) { check(mq_source_set_period(h_, detail::seconds(period))); }

    // Waits until the source has stopped, sending nothing (mq_source_wait):
    // true when it was stopped by stop() (or before it connected), false
    // when it still runs after timeout. When it stopped on its own (e.g. a
    // lost connection stayed down past the reconnect timeout) it throws the
    // cause (ConnectError, ...).
    bool wait(Duration timeout) const {
        int rc = mq_source_wait(h_, detail::seconds(timeout));
        if (rc == MQ_ERR_TIMEOUT) return false;
        check(rc);
        return true;
    }

protected:
    mq_source *h_;
};

// ---------------------------------------------------------------------------
// SynchronousSource: owns one source

// One MetricQ Source, owning its C handle: the destructor stops it (waiting
// at most 10 s for the flush; call stop() for another bound) and frees it.
// Move-only. All operations of SourceRef; a SourceRef copy of it is a
// non-owning reference. The operations may run concurrently from several
// threads, as in C; the ones that change the object itself (connect,
// set_config_handler, reset, release, moves) must not run concurrently with
// other calls on the same object.
class SynchronousSource : public SourceRef {
public:
    // Connects to the management URL, registers token with the manager and
    // returns once the source is ready. Throws Error (ConnectError,
    // TimeoutError, RpcError, InvalidError) on failure.
    SynchronousSource(detail::cstr url, detail::cstr token, Duration timeout = default_timeout)
        : SourceRef(mq_source_create(url.get(), token.get())) {
        if (h_ == nullptr) throw_error(MQ_ERR_INVALID, last_error());
        try {
            connect(timeout);
        } catch (...) {
            mq_source_free(std::exchange(h_, nullptr));
            throw;
        }
    }

    // A source that is not connected yet: set_max_buffered and
    // set_config_handler (to see the first configuration), then connect().
    static SynchronousSource create(detail::cstr url, detail::cstr token) {
        mq_source *h = mq_source_create(url.get(), token.get());
        if (h == nullptr) throw_error(MQ_ERR_INVALID, last_error());
        return SynchronousSource(h);
    }

    // Takes ownership of a handle from mq_source_create or mq_source_new.
    explicit SynchronousSource(mq_source *handle) noexcept : SourceRef(handle) {}

    SynchronousSource(const SynchronousSource &) = delete;
    SynchronousSource &operator=(const SynchronousSource &) = delete;

    SynchronousSource(SynchronousSource &&other) noexcept
        : SourceRef(std::exchange(other.h_, nullptr)), config_id_(std::exchange(other.config_id_, 0)) {}

    SynchronousSource &operator=(SynchronousSource &&other) noexcept {
        if (this != &other) {
            reset();
            h_ = std::exchange(other.h_, nullptr);
            config_id_ = std::exchange(other.config_id_, 0);
        }
        return *this;
    }

    ~SynchronousSource() { reset(); }

    // Stops (if needed) and frees the source now; the object is then empty.
    void reset() noexcept {
        if (h_ != nullptr) mq_source_free(std::exchange(h_, nullptr));
        if (config_id_ != 0) detail::registry<config_slot>::get().remove(std::exchange(config_id_, 0));
    }

    // Gives up ownership: the caller must mq_source_free the handle.
    mq_source *release() noexcept { return std::exchange(h_, nullptr); }

    // Connects a source from create(); may be retried after a failure.
    void connect(Duration timeout = default_timeout) {
        std::shared_ptr<config_slot> slot;
        if (config_id_ != 0 && (slot = detail::registry<config_slot>::get().find(config_id_))) {
            std::lock_guard<std::mutex> lock(slot->mu);
            slot->error.clear();
        }
        int rc = mq_source_connect(h_, detail::seconds(timeout));
        if (rc == MQ_OK) return;
        std::string message = last_error();
        if (slot) {
            std::lock_guard<std::mutex> lock(slot->mu);
            if (!slot->error.empty()) message += " (config handler: " + slot->error + ")";
        }
        throw_error(rc, message);
    }

    // Bounds the points held until the broker confirms them; before connecting.
    void set_max_buffered(std::int64_t points) { check(mq_source_set_max_buffered(h_, points)); }

    // The version reported in the manager's "discover" replies; before connecting.
    void set_client_version(detail::cstr version) { check(mq_source_set_client_version(h_, version.get())); }

    // How long a lost connection may stay down before the source stops on
    // its own (default 600 s); before connecting.
    void set_reconnect_timeout(Duration timeout) {
        check(mq_source_set_reconnect_timeout(h_, detail::seconds(timeout)));
    }

    // The AMQP heartbeat of both connections, whole seconds from 1 s to
    // 65535 s (default 6 s); before connecting. See metricq.h for the
    // trade-off.
    void set_heartbeat(Duration interval) { check(mq_source_set_heartbeat(h_, detail::seconds(interval))); }

    // Installs the configuration handler: fn(SourceRef src, const std::string&
    // config_json), called during connect with the manager's configuration and
    // on every "config" RPC, on a library thread, one call at a time. It may
    // declare metrics, set chunk sizes and the period on src. It accepts the
    // configuration by returning true (or void); returning false or throwing
    // refuses it (a connect in progress fails with RpcError, naming the
    // exception). An empty function (nullptr) removes it. The callable is
    // kept until it is replaced or the source freed, and alive while a call
    // runs.
    template <class F>
    void set_config_handler(F fn) {
        std::function<bool(SourceRef, const std::string &)> wrapped;
        if constexpr (std::is_same_v<std::decay_t<F>, std::nullptr_t>) {
            (void)fn;
        } else {
            if (detail::is_empty(fn)) return set_config_handler(nullptr);
            using R = std::invoke_result_t<F &, SourceRef, const std::string &>;
            static_assert(std::is_void_v<R> || std::is_convertible_v<R, bool>,
                          "a config handler returns void or bool");
            wrapped = [f = std::move(fn)](SourceRef src, const std::string &config) mutable -> bool {
                if constexpr (std::is_void_v<R>) {
                    f(src, config);
                    return true;
                } else {
                    return static_cast<bool>(f(src, config));
                }
            };
        }
        auto &reg = detail::registry<config_slot>::get();
        if (!wrapped) {
            check(mq_source_set_config_handler(h_, nullptr, nullptr));
            if (config_id_ != 0) reg.remove(std::exchange(config_id_, 0));
            return;
        }
        auto slot = std::make_shared<config_slot>();
        slot->fn = std::move(wrapped);
        if (config_id_ != 0) {
            reg.replace(config_id_, std::move(slot));   // the C side already points at config_id_
            return;
        }
        std::uintptr_t id = reg.add(std::move(slot));
        int rc = mq_source_set_config_handler(h_, config_trampoline, detail::id_ptr(id));
        if (rc != MQ_OK) {
            std::string message = last_error();
            reg.remove(id);
            throw_error(rc, message);
        }
        config_id_ = id;
    }

    // Runs the IntervalSource schedule and blocks until the source stops:
    // update(SourceRef src) first at once, then every period on a fixed grid,
    // on a library thread. update returns void or bool:
    //   true / void      carry on;
    //   false            stop the source (stop(), flushing what was sent);
    //                    run_interval then returns normally (or throws what
    //                    the stop threw);
    //   throws PublishError (e.g. from send)   logged, carry on;
    //   throws anything else                   the source stops and
    //                    run_interval rethrows the exception.
    // Returns normally when the source was stopped (stop() from any thread, or
    // from update); throws Error when it stopped itself (e.g. ConnectError).
    template <class F>
    void run_interval(Duration period, F update) {
        using R = std::invoke_result_t<F &, SourceRef>;
        static_assert(std::is_void_v<R> || std::is_convertible_v<R, bool>, "an update function returns void or bool");
        if (detail::is_empty(update)) throw InvalidError(MQ_ERR_INVALID, "run_interval: the update function is empty");
        auto slot = std::make_shared<update_slot>();
        slot->fn = [f = std::move(update)](SourceRef src) mutable -> bool {
            if constexpr (std::is_void_v<R>) {
                f(src);
                return true;
            } else {
                return static_cast<bool>(f(src));
            }
        };
        auto &reg = detail::registry<update_slot>::get();
        std::uintptr_t id = reg.add(slot);
        int rc = mq_source_run_interval(h_, detail::seconds(period), update_trampoline, detail::id_ptr(id));
        std::string message = rc == MQ_OK ? std::string() : last_error();
        reg.remove(id);
        std::lock_guard<std::mutex> lock(slot->mu);
        if (slot->exception) std::rethrow_exception(slot->exception);
        if (rc != MQ_OK) throw_error(rc, message);
    }

private:
    struct config_slot {
        std::function<bool(SourceRef, const std::string &)> fn;
        std::mutex mu;
        std::string error;   // why the last call refused, if it threw
    };
    struct update_slot {
        std::function<bool(SourceRef)> fn;
        std::mutex mu;
        std::exception_ptr exception;
    };

    static int config_trampoline(mq_source *src, const char *config_json, void *user) noexcept {
        auto slot = detail::registry<config_slot>::get().find(detail::ptr_id(user));
        if (!slot) return 0;   // removed meanwhile: as without a handler
        std::string error;
        try {
            if (slot->fn(SourceRef(src), config_json ? std::string(config_json) : std::string("{}"))) return 0;
            error = "refused the configuration";
        } catch (const std::exception &e) {
            error = e.what();
        } catch (...) {
            error = "unknown exception";
        }
        try {
            std::lock_guard<std::mutex> lock(slot->mu);
            slot->error = error;
        } catch (...) {
        }
        return 1;
    }

    static int update_trampoline(mq_source *src, void *user) noexcept {
        auto slot = detail::registry<update_slot>::get().find(detail::ptr_id(user));
        if (!slot) return 1;
        try {
            if (slot->fn(SourceRef(src))) return 0;
            // A clean stop from inside update (not a failure, which the
            // library would log as one): run_interval then returns MQ_OK.
            int rc = mq_source_stop(src, MQ_DEFAULT_TIMEOUT);
            if (rc != MQ_OK) {
                std::string message = last_error();
                std::lock_guard<std::mutex> lock(slot->mu);
                if (!slot->exception) {
                    try {
                        throw_error(rc, message);
                    } catch (...) {
                        slot->exception = std::current_exception();
                    }
                }
            }
            return 0;
        } catch (const PublishError &) {
            return MQ_ERR_PUBLISH;   // the schedule carries on, as in Python
        } catch (...) {
            try {
                std::lock_guard<std::mutex> lock(slot->mu);
                if (!slot->exception) slot->exception = std::current_exception();
            } catch (...) {
            }
            return 1;
        }
    }

    std::uintptr_t config_id_ = 0;
};

}  // namespace metricq

#endif  // METRICQ_HPP
