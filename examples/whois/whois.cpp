// Who owns the clients of a web server? A multiworker Pipeline reads an
// access log in a source process, looks each distinct client address up
// with the whois protocol (RFC 3912) on 12 workers, and gathers the hosts
// per owner in a sink process:
//
//   LogReader (source) -> Whois::lookup (12 workers) -> Report (sink)
//
// By default it generates a log of 3,000 lines and 300 addresses and
// answers the queries itself, with an embedded whois server on loopback
// (2 ms a query, standing in for the network); `--server host:port` asks a
// real one instead (whois.arin.net:43, say). It prints the hosts per owner,
// a summary line, and a time line comparing the run with a serial loop;
// `--progress` draws each element's progress on stderr as it goes.

#include "access_log.hpp"
#include "whois_protocol.hpp"

#include <multiworker/multiworker.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace wx = whois_example;

/// One address and who owns it.
struct Owner {
    std::string ip;
    std::string name;
    template <class Archive>
    void serialize(Archive& archive, unsigned) {
        archive& ip& name;
    }
};

/// The sink's result: hosts per owner.
struct Summary {
    std::map<std::string, std::size_t> hosts_per_owner;
    std::size_t items = 0;
    template <class Archive>
    void serialize(Archive& archive, unsigned) {
        archive& hosts_per_owner& items;
    }
};

/// The source: every distinct client address of the log, once.
struct LogReader {
    std::string path;
    void read(multiworker::Emit<std::string>& out) {
        std::set<std::string> seen;
        wx::for_each_log_line(path, [&](std::string_view line) {
            auto ip = wx::ip_of_log_line(line);
            if (ip && seen.insert(*ip).second) out.emit(*ip);
        });
    }
};

/// A stage: each of its workers asks the whois server on its own copy.
struct Whois {
    std::string host;
    std::uint16_t port = 43;
    Owner lookup(const std::string& ip) {
        const std::string answer = wx::whois_query(host, port, ip, std::chrono::seconds{10});
        return Owner{ip, wx::owner_from_answer(answer)};
    }
};

/// The sink: one object in one process, every owner as it arrives.
struct Report {
    Summary summary;
    void add(const Owner& owner) {
        ++summary.hosts_per_owner[owner.name];
        ++summary.items;
    }
    Summary finish() { return summary; }
};

struct Settings {
    std::string host = "127.0.0.1";
    std::optional<std::uint16_t> port;  // none: the embedded server's
    unsigned workers = 12;
    std::size_t lines = 3000;
    std::size_t ips = 300;
    int delay_ms = 2;
    bool progress = false;
};

Settings parse(int argc, char** argv) {
    Settings settings;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::invalid_argument{std::string{arg} + " needs a value"};
            return argv[++i];
        };
        if (arg == "--server") {
            const std::string address = value();
            const auto colon = address.rfind(':');
            settings.host = address.substr(0, colon);
            settings.port =
                static_cast<std::uint16_t>(colon == std::string::npos ? 43 : std::stoi(address.substr(colon + 1)));
        } else if (arg == "--workers") {
            settings.workers = static_cast<unsigned>(std::stoul(value()));
        } else if (arg == "--delay-ms") {
            settings.delay_ms = std::stoi(value());
        } else if (arg == "--progress") {
            settings.progress = true;
        } else {
            throw std::invalid_argument{"unknown option " + std::string{arg} +
                                        " (options: --server host:port, --workers N, --delay-ms N, --progress)"};
        }
    }
    return settings;
}

/// The same lookups one after another: the baseline of the speed-up.
double serial_seconds(const std::string& log, const Whois& whois) {
    const auto began = std::chrono::steady_clock::now();
    std::set<std::string> seen;
    Whois one = whois;
    wx::for_each_log_line(log, [&](std::string_view line) {
        auto ip = wx::ip_of_log_line(line);
        if (ip && seen.insert(*ip).second) one.lookup(*ip);
    });
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
}

int run(const Settings& settings) {
    const std::filesystem::path log =
        std::filesystem::temp_directory_path() / ("whois_example." + std::to_string(::getpid()) + ".log");
    wx::write_access_log(log, wx::generate_access_log(settings.lines, settings.ips, 2026));
    // Started before the pipeline forks: its threads then wait in poll() and hold no lock a child could inherit.
    std::optional<wx::WhoisServer> server;
    if (!settings.port) server.emplace(std::chrono::milliseconds{settings.delay_ms});
    const Whois whois{settings.host, settings.port ? *settings.port : server->port()};

    const auto began = std::chrono::steady_clock::now();
    multiworker::Pipeline pipeline{
        multiworker::PipelineOptions{.progress_bar = settings.progress,
                                     .progress_interval = std::chrono::milliseconds{100}},
        multiworker::source<&LogReader::read>(LogReader{log.string()}),
        multiworker::stage<&Whois::lookup>(whois, {.workers = settings.workers, .retries = 2, .name = "whois"}),
        multiworker::sink<&Report::add, &Report::finish>(Report{})};
    const auto result = pipeline.run();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    const double serial = serial_seconds(log.string(), whois);
    std::filesystem::remove(log);

    for (const auto& [owner, hosts] : result.value().hosts_per_owner)
        std::printf("%s: %zu hosts\n", owner.c_str(), hosts);
    std::printf("items: %zu, failures: %zu\n", result.value().items, result.errors().size());
    for (const auto& error : result.errors())
        std::fprintf(stderr, "%s: %s\n", error.element_name.c_str(), error.error.what());
    std::printf("time: %.3f s with %u workers, %.3f s serially: %.1fx\n", seconds, settings.workers, serial,
                serial / seconds);
    return result.errors().empty() ? 0 : 1;
}

int main(int argc, char** argv) {
    try {
        return run(parse(argc, argv));
    } catch (const std::exception& error) {
        std::fprintf(stderr, "whois: %s\n", error.what());
        return 2;
    }
}
