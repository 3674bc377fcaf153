// tests/cpp: metricq.hpp against a real broker and a local manager, run by
// the Go harness (tests/cpp/cpp_test.go, tests/harness).
//
// Protocol with the harness (as tests/c/check.h): lines on stdout starting
// with "@@ " say what the sink must receive ("@@ point METRIC T V",
// "@@ seq METRIC N T0 DT V0 DV", "@@ chunks METRIC exact N,..." or
// "@@ chunks METRIC max N") or ask for something ("@@ config TOKEN JSON":
// the manager pushes a configuration; the harness answers "ok" or
// "error TEXT" on stdin; "@@ discover TOKEN" and "@@ cut" as in check.h).
// The last line is "@@ done". Failures go to stderr
// and make the exit status 1.
//
// Environment: METRICQ_TEST_URL (the broker, a vhost with the manager),
// METRICQ_TEST_REFUSED_URL (a port nobody listens on; its password
// contains "s3cret"), METRICQ_TEST_PROXY_URL (the broker through a proxy
// that "@@ cut" takes away).
#include <metricq.hpp>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

std::atomic<int> failures{0};
std::mutex out_mu;

void fail(const char *file, int line, const std::string &what) {
    std::lock_guard<std::mutex> lock(out_mu);
    std::fprintf(stderr, "FAIL %s:%d: %s\n", file, line, what.c_str());
    failures++;
}

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) fail(__FILE__, __LINE__, #cond);                                  \
    } while (0)

// Runs stmt, which must throw exactly metricq error type E with code want.
#define EXPECT_THROW(E, want, stmt)                                                    \
    do {                                                                               \
        try {                                                                          \
            stmt;                                                                      \
            fail(__FILE__, __LINE__, #stmt " did not throw");                          \
        } catch (const E &e_) {                                                        \
            if (e_.code() != (want))                                                   \
                fail(__FILE__, __LINE__,                                               \
                     std::string(#stmt ": code ") + std::to_string(e_.code()) + ", want " + #want); \
            if (std::string(e_.what()).empty()) fail(__FILE__, __LINE__, #stmt ": empty what()"); \
            if (std::strstr(e_.what(), "s3cret")) fail(__FILE__, __LINE__, #stmt ": password in what()"); \
        } catch (const std::exception &e_) {                                           \
            fail(__FILE__, __LINE__, std::string(#stmt ": threw another type: ") + e_.what()); \
        }                                                                              \
    } while (0)

// Runs stmt, which must not throw.
#define EXPECT_OK(stmt)                                                                \
    do {                                                                               \
        try {                                                                          \
            stmt;                                                                      \
        } catch (const std::exception &e_) {                                           \
            fail(__FILE__, __LINE__, std::string(#stmt ": ") + e_.what());             \
        }                                                                              \
    } while (0)

void say(const std::string &line) {
    std::lock_guard<std::mutex> lock(out_mu);
    std::printf("@@ %s\n", line.c_str());
    std::fflush(stdout);
}

std::string hex(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%a", v);
    return buf;
}

void expect_point(const std::string &metric, std::int64_t t, double v) {
    say("point " + metric + " " + std::to_string(t) + " " + hex(v));
}

void expect_seq(const std::string &metric, std::int64_t n, std::int64_t t0, std::int64_t dt, double v0, double dv) {
    say("seq " + metric + " " + std::to_string(n) + " " + std::to_string(t0) + " " + std::to_string(dt) + " " +
        hex(v0) + " " + hex(dv));
}

// Asks the harness for a config push; returns its answer ("ok", "error ...").
std::string push_config(const std::string &token, const std::string &json) {
    say("config " + token + " " + json);
    std::string answer;
    std::getline(std::cin, answer);
    return answer;
}

std::string env(const char *name) {
    const char *v = std::getenv(name);
    if (v == nullptr || *v == '\0') {
        std::fprintf(stderr, "%s is not set\n", name);
        std::exit(2);
    }
    return v;
}

// A base time, in whole seconds, so that every test has its own range.
const std::int64_t T0 = (metricq::now_ns() / 1000000000 - 3600) * 1000000000;

void basics() {
    std::fprintf(stderr, "== basics\n");
    CHECK(metricq::version() == std::string("libmetricq/") + MQ_VERSION_STRING);
    CHECK(!metricq::strerror(MQ_ERR_ORDER).empty());
    auto sys = metricq::to_ns(std::chrono::system_clock::now());
    CHECK(std::llabs(metricq::now_ns() - sys) < 1000000000LL);
    CHECK(metricq::to_ns(metricq::from_ns(1700000000123456789LL)) / 1000 == 1700000000123456789LL / 1000);
    CHECK(metricq::to_ns(metricq::TimePoint{}) == 0);

    // Errors without a broker.
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, metricq::SynchronousSource("no scheme", "cpptest-x", 1s));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID,
                 metricq::SynchronousSource(env("METRICQ_TEST_URL"), "cpptest-x", 0s));
    EXPECT_THROW(metricq::ConnectError, MQ_ERR_CONNECT,
                 metricq::SynchronousSource(env("METRICQ_TEST_REFUSED_URL"), "cpptest-refused", 5s));
    try {
        metricq::SynchronousSource(env("METRICQ_TEST_REFUSED_URL"), "cpptest-refused", 5s);
    } catch (const metricq::Error &e) {
        CHECK(std::string(e.what()) == metricq::last_error());   // what() is mq_last_error()
        CHECK(std::string(e.what()).find("s3cret") == std::string::npos);
    }
    EXPECT_THROW(metricq::Error, MQ_ERR_INVALID, metricq::set_log_level(12345));
    EXPECT_OK(metricq::set_log_level(MQ_LOG_WARN));

    // A moved-from or empty source throws, never crashes.
    metricq::SourceRef none;
    CHECK(!none);
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, none.send("a.b", 1.0));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, none.flush());
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, none.stats());
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, none.config());
}

// The whole cycle on one source: declare, send in every form, batches,
// flush, config, stats, errors, stop.
void cycle(const std::string &url) {
    std::fprintf(stderr, "== cycle\n");
    metricq::SynchronousSource src(url, "cpptest-main");   // default timeout: 60 s
    CHECK(src.config().find("\"answer\":42") != std::string::npos);

    EXPECT_OK(src.declare("cpptest.single", R"({"unit": "V", "rate": 10, "description": "one at a time"})"));
    EXPECT_OK(src.declare_many(R"({"cpptest.batch": {"unit": "A"}, "cpptest.chrono": {}})"));
    EXPECT_OK(src.declare(std::string("cpptest.now")));

    // single: int64 ns, any integer type; chunk size 1 (the default).
    std::int64_t t = T0;
    for (int i = 0; i < 5; i++) {
        std::int64_t ti = t + i * 1000000;
        EXPECT_OK(src.send("cpptest.single", ti, i * 0.5));
        expect_point("cpptest.single", ti, i * 0.5);
    }
    EXPECT_OK(src.send("cpptest.single", static_cast<long>(t + 5000000), 2.5, 10s));
    expect_point("cpptest.single", t + 5000000, 2.5);
    EXPECT_OK(src.send(std::string("cpptest.single"), static_cast<long long>(t + 6000000), -1.0, 500ms));
    expect_point("cpptest.single", t + 6000000, -1.0);
    say("chunks cpptest.single exact 1,1,1,1,1,1,1");

    // chrono: system_clock time points of any resolution.
    auto tp = metricq::from_ns(T0);
    EXPECT_OK(src.send("cpptest.chrono", tp, 1.25));
    expect_point("cpptest.chrono", metricq::to_ns(tp), 1.25);
    auto tp2 = std::chrono::time_point_cast<std::chrono::milliseconds>(tp) + 1500ms;
    EXPECT_OK(src.send("cpptest.chrono", tp2, 2.25, std::chrono::minutes(1)));
    expect_point("cpptest.chrono", metricq::to_ns(tp2), 2.25);
    say("chunks cpptest.chrono exact 1,1");

    // now: send(metric, value) stamps the point with mq_now.
    std::int64_t before = metricq::now_ns();
    EXPECT_OK(src.send("cpptest.now", 7.0));
    std::int64_t after = metricq::now_ns();
    say("between cpptest.now " + std::to_string(before) + " " + std::to_string(after) + " " + hex(7.0));

    // batch: chunks of 4; vectors, pointers, time points, spans.
    EXPECT_OK(src.set_chunk_size("cpptest.batch", 4));
    std::vector<std::int64_t> times;
    std::vector<double> values;
    for (int i = 0; i < 10; i++) {
        times.push_back(T0 + i * 1000);
        values.push_back(100 + i);
    }
    EXPECT_OK(src.send_batch("cpptest.batch", times, values));
    std::int64_t more_t[3] = {T0 + 10000, T0 + 11000, T0 + 12000};
    double more_v[3] = {110, 111, 112};
    EXPECT_OK(src.send_batch("cpptest.batch", more_t, more_v, 3, 5s));
    std::vector<metricq::TimePoint> tps = {metricq::from_ns(T0 + 13000), metricq::from_ns(T0 + 14000)};
    EXPECT_OK(src.send_batch("cpptest.batch", tps, std::vector<double>{113, 114}));
    std::int64_t n = 15;
#ifdef METRICQ_HPP_HAS_SPAN
    std::int64_t span_t[2] = {T0 + 15000, T0 + 16000};
    double span_v[2] = {115, 116};
    EXPECT_OK(src.send_batch("cpptest.batch", std::span<const std::int64_t>(span_t), std::span<const double>(span_v)));
    n = 17;
#endif
    EXPECT_OK(src.send_batch("cpptest.batch", std::vector<std::int64_t>{}, std::vector<double>{}));   // no-op
    EXPECT_OK(src.flush());
    expect_seq("cpptest.batch", n, T0, 1000, 100, 1);
    say("chunks cpptest.batch max 4");

    // Error mapping on a live source: nothing below is accepted.
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.declare("bad*name"));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.declare("_private"));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.declare("cpptest.x", "{not json"));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.declare_many("42"));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.send("bad#name", T0, 1.0));
    EXPECT_THROW(metricq::UndeclaredError, MQ_ERR_UNDECLARED, src.send("cpptest.undeclared", T0, 1.0));
    EXPECT_THROW(metricq::OrderError, MQ_ERR_ORDER, src.send("cpptest.single", T0, 1.0));
    EXPECT_THROW(metricq::OrderError, MQ_ERR_ORDER,
                 src.send_batch("cpptest.batch", std::vector<std::int64_t>{T0 + 900000, T0 + 800000},
                                std::vector<double>{1, 2}));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID,
                 src.send_batch("cpptest.batch", std::vector<std::int64_t>{T0 + 900000}, std::vector<double>{1, 2}));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.set_chunk_size(-1));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.flush(-1s));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.send("cpptest.single", 1.0, 0ms));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.set_max_buffered(10));   // after connecting
    try {
        src.send("cpptest.undeclared", T0, 1.0);
    } catch (const metricq::Error &e) {
        CHECK(std::string(e.what()).find("cpptest.undeclared") != std::string::npos);
    }

    metricq::Stats st = src.stats();
    CHECK(st.points_accepted == 7u + 2u + 1u + static_cast<std::uint64_t>(n));
    CHECK(st.buffered_points <= st.points_accepted);

    // Move: the new owner works, the old one is empty.
    metricq::SynchronousSource moved = std::move(src);
    CHECK(!src);   // NOLINT: a moved-from source is empty by contract
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.send("cpptest.single", 1.0));
    EXPECT_OK(moved.send("cpptest.single", T0 + 7000000, 8.0));
    expect_point("cpptest.single", T0 + 7000000, 8.0);
    say("chunks cpptest.single exact 1,1,1,1,1,1,1,1");

    EXPECT_OK(moved.stop());
    EXPECT_OK(moved.stop());   // idempotent
    EXPECT_THROW(metricq::StoppedError, MQ_ERR_STOPPED, moved.send("cpptest.single", T0 + 8000000, 9.0));
    EXPECT_THROW(metricq::StoppedError, MQ_ERR_STOPPED, moved.declare("cpptest.late"));
    CHECK(moved.stats().points_accepted == st.points_accepted + 1);
    moved.reset();
    CHECK(!moved);
    say("chunks cpptest.now exact 1");
}

// Threads: several threads send on one source at once (each its own
// metric), others read stats and flush; two more sources live in threads of
// their own and are stopped by their destructors.
void threads(const std::string &url) {
    std::fprintf(stderr, "== threads\n");
    metricq::SynchronousSource src(url, "cpptest-threads");
    constexpr int senders = 4, points = 300;
    EXPECT_OK(src.set_chunk_size(25));
    for (int k = 0; k < senders; k++) EXPECT_OK(src.declare("cpptest.thread." + std::to_string(k)));

    std::atomic<bool> sending{true};
    std::vector<std::thread> pool;
    for (int k = 0; k < senders; k++) {
        pool.emplace_back([&src, k] {
            std::string metric = "cpptest.thread." + std::to_string(k);
            for (int i = 0; i < points; i++) {
                EXPECT_OK(src.send(metric, T0 + i * 1000, k * 1000.0 + i));
                if (i % 100 == 99) EXPECT_OK(src.flush(10s));
            }
        });
    }
    std::thread watcher([&src, &sending] {
        while (sending) {
            EXPECT_OK(src.stats());
            EXPECT_OK(src.config());
            std::this_thread::sleep_for(1ms);
        }
    });
    // Sources owned by threads: RAII stops (and so flushes) them.
    std::vector<std::thread> owners;
    for (int k = 0; k < 2; k++) {
        owners.emplace_back([&url, k] {
            try {
                metricq::SynchronousSource own(url, "cpptest-owner-" + std::to_string(k), 30s);
                std::string metric = "cpptest.owner." + std::to_string(k);
                own.declare(metric);
                own.set_chunk_size(metric, 0);   // only on flush or stop
                for (int i = 0; i < 50; i++) own.send(metric, T0 + i * 1000000, static_cast<double>(i));
            } catch (const std::exception &e) {
                fail(__FILE__, __LINE__, std::string("owner thread: ") + e.what());
            }
        });
    }
    for (auto &th : pool) th.join();
    for (auto &th : owners) th.join();
    sending = false;
    watcher.join();
    EXPECT_OK(src.flush());
    for (int k = 0; k < senders; k++) {
        std::string metric = "cpptest.thread." + std::to_string(k);
        expect_seq(metric, points, T0, 1000, k * 1000.0, 1);
        say("chunks " + metric + " max 25");
    }
    for (int k = 0; k < 2; k++) {
        std::string metric = "cpptest.owner." + std::to_string(k);
        expect_seq(metric, 50, T0, 1000000, 0, 1);
        say("chunks " + metric + " exact 50");
    }
    CHECK(src.stats().points_accepted == static_cast<std::uint64_t>(senders * points));
}

// The configuration handler: during connect and on config RPCs; refusing
// by returning false or throwing; lifetime across replacement and free.
void config_handler(const std::string &url) {
    std::fprintf(stderr, "== config handler\n");
    auto src = metricq::SynchronousSource::create(url, "cpptest-config");
    EXPECT_OK(src.set_max_buffered(10000));
    std::atomic<int> calls{0};
    std::string seen;
    std::mutex seen_mu;
    src.set_config_handler([&](metricq::SourceRef s, const std::string &config) {
        calls++;
        {
            std::lock_guard<std::mutex> lock(seen_mu);
            seen = config;
        }
        if (config.find("\"refuse\":true") != std::string::npos) throw std::runtime_error("refused by the test");
        s.declare("cpptest.config.value");
        s.set_chunk_size("cpptest.config.value", 1);
        return config.find("\"rate\"") != std::string::npos;
    });
    EXPECT_OK(src.connect());
    CHECK(calls == 1);
    {
        std::lock_guard<std::mutex> lock(seen_mu);
        CHECK(seen.find("\"rate\":5") != std::string::npos);
    }
    EXPECT_OK(src.send("cpptest.config.value", T0, 1.0));   // declared by the handler
    expect_point("cpptest.config.value", T0, 1.0);

    CHECK(push_config("cpptest-config", R"({"rate": 7})") == "ok");
    CHECK(calls == 2);
    CHECK(src.config().find("\"rate\":7") != std::string::npos);
    std::string answer = push_config("cpptest-config", R"({"refuse": true})");
    CHECK(answer.rfind("error", 0) == 0);
    CHECK(calls == 3);
    answer = push_config("cpptest-config", R"({"norate": 1})");   // returns false
    CHECK(answer.rfind("error", 0) == 0);

    // Replaced (void-returning), then removed.
    std::atomic<int> second{0};
    src.set_config_handler([&second](metricq::SourceRef, const std::string &) { second++; });
    CHECK(push_config("cpptest-config", R"({"rate": 9})") == "ok");
    CHECK(second == 1 && calls == 4);
    src.set_config_handler(nullptr);
    CHECK(push_config("cpptest-config", R"({"rate": 11})") == "ok");
    CHECK(second == 1 && calls == 4);
    EXPECT_OK(src.send("cpptest.config.value", T0 + 1000, 2.0));
    expect_point("cpptest.config.value", T0 + 1000, 2.0);
    say("chunks cpptest.config.value exact 1,1");
    EXPECT_OK(src.stop());

    // A handler that refuses makes the connect fail with RpcError, naming
    // the exception; the source may connect again once it accepts.
    auto refusing = metricq::SynchronousSource::create(url, "cpptest-config-refuse");
    bool refuse = true;
    refusing.set_config_handler([&refuse](metricq::SourceRef, const std::string &) {
        if (refuse) throw std::runtime_error("no thanks");
    });
    try {
        refusing.connect(10s);
        fail(__FILE__, __LINE__, "connect with a refusing handler succeeded");
    } catch (const metricq::RpcError &e) {
        CHECK(e.code() == MQ_ERR_RPC);
        CHECK(std::string(e.what()).find("no thanks") != std::string::npos);
    } catch (const std::exception &e) {
        fail(__FILE__, __LINE__, std::string("connect with a refusing handler: ") + e.what());
    }
    refuse = false;
    EXPECT_OK(refusing.connect(10s));
}

// run_interval: the update's return value, exceptions, stop from a thread.
void interval(const std::string &url) {
    std::fprintf(stderr, "== interval\n");
    {
        metricq::SynchronousSource src(url, "cpptest-interval");
        src.declare("cpptest.interval");
        int round = 0;
        auto start = std::chrono::steady_clock::now();
        EXPECT_OK(src.run_interval(20ms, [&round](metricq::SourceRef s) {
            s.send("cpptest.interval", T0 + round * 1000, static_cast<double>(round));
            return ++round < 5;   // false: stop
        }));
        CHECK(round == 5);
        CHECK(std::chrono::steady_clock::now() - start >= 70ms);
        expect_seq("cpptest.interval", 5, T0, 1000, 0, 1);
        say("chunks cpptest.interval exact 1,1,1,1,1");
        EXPECT_THROW(metricq::StoppedError, MQ_ERR_STOPPED, src.send("cpptest.interval", T0 + 99000, 1.0));
    }
    {
        // An exception from update stops the source and is rethrown.
        metricq::SynchronousSource src(url, "cpptest-interval-throw");
        int round = 0;
        try {
            src.run_interval(10ms, [&round](metricq::SourceRef) {
                if (++round == 3) throw std::logic_error("update failed");
            });
            fail(__FILE__, __LINE__, "run_interval did not rethrow");
        } catch (const std::logic_error &e) {
            CHECK(std::string(e.what()) == "update failed");
        }
        CHECK(round == 3);
        // A PublishError from update is ridden out.
        metricq::SynchronousSource src2(url, "cpptest-interval-publish");
        round = 0;
        EXPECT_OK(src2.run_interval(10ms, [&round](metricq::SourceRef) {
            if (++round == 2) throw metricq::PublishError(MQ_ERR_PUBLISH, "test");
            return round < 4;
        }));
        CHECK(round == 4);
    }
    {
        // stop() from another thread ends run_interval normally.
        metricq::SynchronousSource src(url, "cpptest-interval-stop");
        std::atomic<int> rounds{0};
        metricq::SourceRef ref = src;
        std::thread stopper([ref]() mutable {
            std::this_thread::sleep_for(200ms);
            EXPECT_OK(ref.stop(10s));
        });
        EXPECT_OK(src.run_interval(std::chrono::milliseconds(25), [&rounds](metricq::SourceRef) { rounds++; }));
        stopper.join();
        CHECK(rounds >= 2);
    }
}

void logging(const std::string &url) {
    std::fprintf(stderr, "== logging\n");
    std::atomic<int> lines{0};
    std::atomic<bool> password{false};
    metricq::set_log_handler([&](int level, const std::string &message) {
        if (level >= MQ_LOG_WARN && message.find("cpptest-log") != std::string::npos) lines++;
        if (message.find("s3cret") != std::string::npos) password = true;
    });
    EXPECT_OK(metricq::set_log_level(MQ_LOG_DEBUG));
    {
        // An update that fails stops the source, which is logged as an error.
        metricq::SynchronousSource src(url, "cpptest-log");
        EXPECT_THROW(metricq::TimeoutError, MQ_ERR_TIMEOUT, src.run_interval(10ms, [](metricq::SourceRef) {
            throw metricq::TimeoutError(MQ_ERR_TIMEOUT, "from update");
        }));
    }
    EXPECT_THROW(metricq::ConnectError, MQ_ERR_CONNECT,
                 metricq::SynchronousSource(env("METRICQ_TEST_REFUSED_URL"), "cpptest-refused", 5s));
    EXPECT_OK(metricq::set_log_level(MQ_LOG_WARN));
    metricq::set_log_handler(nullptr);
    CHECK(lines > 0);
    CHECK(!password);
}

}  // namespace

// Asks the harness for something ("discover TOKEN", "cut"); returns its answer.
std::string request(const std::string &what) {
    say(what);
    std::string answer;
    std::getline(std::cin, answer);
    return answer;
}

// Client version in discover, the reconnect timeout, and learning that a
// source stopped on its own, without sending.
void settings_and_wait(const std::string &url) {
    auto src = metricq::SynchronousSource::create(env("METRICQ_TEST_PROXY_URL"), "cpptest-settings");
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.set_reconnect_timeout(-1s));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.set_client_version("1\n"));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.set_heartbeat(500ms));
    EXPECT_OK(src.set_heartbeat(5s));
    EXPECT_OK(src.set_client_version("cpp-7.7"));
    EXPECT_OK(src.set_reconnect_timeout(1s));
    EXPECT_OK(src.connect(20s));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.set_client_version("other"));
    std::string answer = request("discover cpptest-settings");
    if (answer != "ok version=cpp-7.7") fail(__FILE__, __LINE__, "discover: " + answer);
    bool stopped = true;
    EXPECT_OK(stopped = src.wait(100ms));
    CHECK(!stopped);
    answer = request("cut");
    CHECK(answer == "ok");
    auto start = std::chrono::steady_clock::now();
    EXPECT_THROW(metricq::ConnectError, MQ_ERR_CONNECT, src.wait(30s));
    auto took = std::chrono::steady_clock::now() - start;
    CHECK(took >= 900ms && took < 11s);
    EXPECT_THROW(metricq::ConnectError, MQ_ERR_CONNECT, src.send("cpptest.settings", 1.0));

    metricq::SynchronousSource other(url, "cpptest-settings-2", 20s);
    EXPECT_OK(other.stop());
    EXPECT_OK(stopped = other.wait(5s));
    CHECK(stopped);
}

// Metric handles: sends by handle arrive as sends by name do, with the same
// errors; a handle that outlives its source throws, never crashes.
void metric_handles(const std::string &url) {
    std::fprintf(stderr, "== metric handles\n");
    metricq::Metric stale;
    {
        metricq::SynchronousSource src(url, "cpptest-handles", 20s);
        EXPECT_OK(src.declare_many(R"({"cpptest.handle": {}, "cpptest.handle_batch": {}})"));
        EXPECT_OK(src.set_chunk_size("cpptest.handle_batch", 3));
        metricq::Metric m, batch;
        EXPECT_OK(m = src.metric("cpptest.handle"));
        CHECK(m && src.metric(std::string("cpptest.handle")).handle() == m.handle());   // one per name
        EXPECT_OK(batch = src.metric("cpptest.handle_batch"));
        EXPECT_OK(m.send(T0, 1.5));
        expect_point("cpptest.handle", T0, 1.5);
        auto tp = metricq::from_ns(T0 + 1000000);
        EXPECT_OK(m.send(tp, 2.5, 5s));
        expect_point("cpptest.handle", metricq::to_ns(tp), 2.5);
        say("chunks cpptest.handle exact 1,1");
        EXPECT_OK(batch.send_batch(std::vector<std::int64_t>{T0, T0 + 1000, T0 + 2000}, std::vector<double>{10, 11, 12}));
        std::int64_t more_t[2] = {T0 + 3000, T0 + 4000};
        double more_v[2] = {13, 14};
        EXPECT_OK(batch.send_batch(more_t, more_v, 2));
        EXPECT_OK(batch.send(T0 + 5000, 15.0));
        EXPECT_OK(src.flush());
        expect_seq("cpptest.handle_batch", 6, T0, 1000, 10, 1);
        say("chunks cpptest.handle_batch exact 3,3");

        // The rules of sends by name; nothing below is accepted.
        EXPECT_THROW(metricq::OrderError, MQ_ERR_ORDER, m.send(T0, 9.0));
        EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID,
                     batch.send_batch(std::vector<std::int64_t>{T0 + 9000}, std::vector<double>{1, 2}));
        metricq::Metric undeclared;
        EXPECT_OK(undeclared = src.metric("cpptest.handle_undeclared"));
        EXPECT_THROW(metricq::UndeclaredError, MQ_ERR_UNDECLARED, undeclared.send(T0, 1.0));
        EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, src.metric("bad*name"));
        EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, metricq::SourceRef().metric("cpptest.handle"));
        CHECK(src.stats().points_accepted == 8);
        stale = m;
        EXPECT_OK(src.stop());
        EXPECT_THROW(metricq::StoppedError, MQ_ERR_STOPPED, m.send(T0 + 9000, 1.0));
    }   // the source is freed here: its handles are stale
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, stale.send(T0 + 10000, 1.0));
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID,
                 stale.send_batch(std::vector<std::int64_t>{T0 + 10000}, std::vector<double>{1}));
    metricq::Metric none;
    CHECK(!none);
    EXPECT_THROW(metricq::InvalidError, MQ_ERR_INVALID, none.send(1.0));
}

int main() {
    std::string url = env("METRICQ_TEST_URL");
    try {
        basics();
        cycle(url);
        metric_handles(url);
        threads(url);
        config_handler(url);
        interval(url);
        settings_and_wait(url);
        logging(url);
    } catch (const std::exception &e) {
        fail(__FILE__, __LINE__, std::string("uncaught: ") + e.what());
    }
    say("done");
    if (failures > 0) {
        std::fprintf(stderr, "%d failures\n", failures.load());
        return 1;
    }
    std::fprintf(stderr, "all passed\n");
    return 0;
}
