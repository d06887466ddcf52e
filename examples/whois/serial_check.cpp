// The whois example's parts without multiworker, one lookup at a time: the
// baseline the Pipeline demo is compared with, and a check that the parts fit.
// Generates a 3,000-line access log with 300 distinct client addresses, writes
// it to a temporary file and reads it back, starts an embedded whois server
// (2 ms a query), looks every distinct address up with whois_query, checks each
// owner against expected_owner, and prints the hosts per owner:
//
//   Acme Hosting Inc: 41 hosts
//   ...
//   items: 300, failures: 0
//
// Exits 1 with a message on any mismatch or failure, or if the server left a
// thread or a descriptor behind. The time taken goes to stderr.

#include "access_log.hpp"
#include "whois_protocol.hpp"

#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace {

// Entries of a /proc/self directory (task: this process's threads, fd: its open descriptors), to
// check that the server's destructor left none of its own behind.
std::size_t entries(const char* directory) {
    const std::filesystem::directory_iterator listing{directory};
    return static_cast<std::size_t>(std::distance(begin(listing), end(listing)));
}

int check() {
    namespace wx = whois_example;
    constexpr std::size_t lines = 3000;
    constexpr std::size_t distinct = 300;
    const std::filesystem::path log_file =
        std::filesystem::temp_directory_path() / ("whois_serial_check." + std::to_string(::getpid()) + ".log");
    wx::write_access_log(log_file, wx::generate_access_log(lines, distinct, 2026));
    std::set<std::string> ips;
    std::size_t read = 0;
    wx::for_each_log_line(log_file, [&](std::string_view line) {
        ++read;
        if (auto ip = wx::ip_of_log_line(line)) ips.insert(std::move(*ip));
    });
    std::filesystem::remove(log_file);
    if (read != lines || ips.size() != distinct) {
        std::fprintf(stderr, "serial_check: read %zu lines with %zu distinct addresses, expected %zu and %zu\n", read,
                     ips.size(), lines, distinct);
        return 1;
    }

    const std::size_t threads_before = entries("/proc/self/task");
    const std::size_t fds_before = entries("/proc/self/fd");
    std::map<std::string, std::size_t> hosts_per_owner;
    const auto began = std::chrono::steady_clock::now();
    {
        const wx::WhoisServer server{std::chrono::milliseconds{2}};
        for (const std::string& ip : ips) {
            const std::string owner =
                wx::owner_from_answer(wx::whois_query("127.0.0.1", server.port(), ip, std::chrono::seconds{5}));
            if (owner != wx::expected_owner(ip)) {
                std::fprintf(stderr, "serial_check: %s is owned by '%s', the server said '%s'\n", ip.c_str(),
                             wx::expected_owner(ip).c_str(), owner.c_str());
                return 1;
            }
            ++hosts_per_owner[owner];
        }
        if (server.answered() != ips.size()) {
            std::fprintf(stderr, "serial_check: the server answered %zu queries, expected %zu\n", server.answered(),
                         ips.size());
            return 1;
        }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    const std::size_t threads_after = entries("/proc/self/task");
    const std::size_t fds_after = entries("/proc/self/fd");
    if (threads_after != threads_before || fds_after != fds_before) {
        std::fprintf(stderr, "serial_check: %zu threads and %zu descriptors before the server, %zu and %zu after\n",
                     threads_before, fds_before, threads_after, fds_after);
        return 1;
    }

    for (const auto& [owner, hosts] : hosts_per_owner) std::printf("%s: %zu hosts\n", owner.c_str(), hosts);
    std::printf("items: %zu, failures: 0\n", ips.size());
    std::fprintf(stderr, "serial_check: %zu lookups in %.2f s, one at a time\n", ips.size(), seconds);
    return 0;
}

}  // namespace

int main() {
    try {
        return check();
    } catch (const std::exception& error) {
        std::fprintf(stderr, "serial_check: %s\n", error.what());
        return 1;
    }
}
