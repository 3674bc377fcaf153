// A MetricQ Source in C++: several sensor threads sample simulated signals
// on a fixed schedule and send each reading at once; a logger thread
// collects a fast signal and sends it in batches.
//
// The manager's configuration for the token sets the sample rate in Hz
// ("rate", default 10) through the configuration handler. SIGINT or SIGTERM
// stop it cleanly (buffered points are published).
//
//   cmake -S examples/cpp -B build-cpp -DCMAKE_PREFIX_PATH=/usr/local && cmake --build build-cpp
//   c++ -std=c++17 -pthread -o sensor_source sensor_source.cpp $(pkg-config --cflags --libs libmetricq)
//   ./sensor_source [URL [TOKEN [SECONDS]]]        (SECONDS 0: until a signal; default 10)
//
// URL defaults to $METRICQ_URL, else amqp://guest:guest@127.0.0.1:5672/.
#include <metricq.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<bool> stop_requested{false};

extern "C" void on_signal(int) { stop_requested = true; }

// A number from {"rate": 12.5, ...}; a real program uses a JSON library.
double json_number(const std::string &json, const std::string &key, double fallback) {
    auto pos = json.find("\"" + key + "\":");
    if (pos == std::string::npos) return fallback;
    return std::strtod(json.c_str() + pos + key.size() + 3, nullptr);
}

}  // namespace

int main(int argc, char **argv) {
    using namespace std::chrono_literals;
    const char *env_url = std::getenv("METRICQ_URL");
    std::string url = argc > 1 ? argv[1] : env_url ? env_url : "amqp://guest:guest@127.0.0.1:5672/";
    std::string token = argc > 2 ? argv[2] : "source-cpp-sensors";
    auto duration = std::chrono::duration<double>(argc > 3 ? std::atof(argv[3]) : 10.0);

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);

    const std::vector<std::string> sensors = {"example.cpp.sensor.temperature", "example.cpp.sensor.pressure",
                                              "example.cpp.sensor.humidity"};
    const std::string fast = "example.cpp.sensor.vibration";
    std::atomic<double> rate{10.0};

    try {
        // Two steps, so that the handler sees the first configuration.
        auto src = metricq::SynchronousSource::create(url, token);
        src.set_config_handler([&](metricq::SourceRef s, const std::string &config) {
            double r = json_number(config, "rate", 10.0);
            if (!(r > 0 && r <= 1000)) return false;   // refuse the configuration
            rate = r;
            s.declare_many(R"({"example.cpp.sensor.temperature": {"unit": "degC", "rate": )" + std::to_string(r) +
                           R"(}, "example.cpp.sensor.pressure": {"unit": "hPa", "rate": )" + std::to_string(r) +
                           R"(}, "example.cpp.sensor.humidity": {"unit": "%", "rate": )" + std::to_string(r) + "}}");
            s.declare(fast, R"({"unit": "m/s^2", "rate": 1000, "description": "sent in batches"})");
            s.set_chunk_size(fast, 0);   // the batches are the chunks
            return true;
        });
        src.connect(30s);
        std::printf("connected as %s, %.1f Hz, config %s\n", token.c_str(), rate.load(), src.config().c_str());

        auto start = std::chrono::steady_clock::now();
        auto running = [&] {
            return !stop_requested && (duration.count() <= 0 || std::chrono::steady_clock::now() - start < duration);
        };
        std::atomic<int> failed{0};

        // One thread per sensor: metricq sources are thread-safe.
        std::vector<std::thread> threads;
        for (std::size_t k = 0; k < sensors.size(); k++) {
            threads.emplace_back([&, k] {
                auto next = std::chrono::steady_clock::now();
                for (long i = 0; running(); i++) {
                    double x = static_cast<double>(i) / rate;
                    double value = 20.0 * static_cast<double>(k + 1) + std::sin(x + static_cast<double>(k));
                    try {
                        src.send(sensors[k], std::chrono::system_clock::now(), value);
                    } catch (const metricq::Error &e) {
                        std::fprintf(stderr, "%s: %s\n", sensors[k].c_str(), e.what());
                        failed++;
                        return;
                    }
                    next += std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(1.0 / rate));
                    std::this_thread::sleep_until(next);
                }
            });
        }

        // A fast signal, sampled every millisecond and sent every 100 ms.
        threads.emplace_back([&] {
            std::vector<metricq::TimePoint> times;
            std::vector<double> values;
            auto last = metricq::TimePoint{};
            while (running()) {
                for (int i = 0; i < 100; i++) {
                    auto now = std::chrono::system_clock::now();
                    if (now <= last) now = last + std::chrono::nanoseconds(1);   // strictly increasing
                    last = now;
                    times.push_back(now);
                    values.push_back(0.1 * std::sin(static_cast<double>(times.size())));
                    std::this_thread::sleep_for(1ms);
                }
                try {
                    src.send_batch(fast, times, values);
                } catch (const metricq::Error &e) {
                    std::fprintf(stderr, "%s: %s\n", fast.c_str(), e.what());
                    failed++;
                    return;
                }
                times.clear();
                values.clear();
            }
        });

        for (auto &t : threads) t.join();
        src.stop(10s);   // publishes what is still buffered
        auto st = src.stats();
        std::printf("sent %llu points in %llu chunks\n", static_cast<unsigned long long>(st.points_accepted),
                    static_cast<unsigned long long>(st.chunks_published));
        return failed == 0 ? 0 : 1;
    } catch (const metricq::Error &e) {
        std::fprintf(stderr, "%s: %s\n", metricq::strerror(e.code()).c_str(), e.what());
        return 1;
    }
}
