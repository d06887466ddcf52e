#pragma once

// The whois example's input: a web server's access log in Apache's "combined"
// format, made up but realistic enough to be worth reading with a real parser
//
//   203.0.113.7 - - [02/Dec/2026:10:00:00 +0000] "GET /index.html HTTP/1.1" 200 512 "-" "curl/8.5.0"
//
// generated from a seed with a generator written out here (xorshift32, plain
// 32-bit arithmetic, no std:: distributions), so the same seed gives the same
// log byte for byte with any compiler and standard library: a test can predict
// the example's whole report. Every one of the requested distinct addresses
// occurs at least once; a few of them far more often than the rest, as in a
// real log.

#include "ipv4.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace whois_example {

/// A xorshift32 generator (Marsaglia 2003), spelled out so that the log does
/// not depend on how a standard library implements its engines or
/// distributions; statistically weak, which a made-up log does not mind.
class LogRandom {
public:
    /// Any seed works, 0 included: the seed is mixed into a non-zero state
    /// (xorshift has a fixed point at 0).
    explicit LogRandom(unsigned seed) noexcept : state_{static_cast<std::uint32_t>(seed) * 2654435761u + 0x9E3779B9u} {
        if (state_ == 0) state_ = 1;
    }

    /// The next 32 bits of the sequence.
    std::uint32_t next() noexcept {
        state_ ^= state_ << 13;
        state_ ^= state_ >> 17;
        state_ ^= state_ << 5;
        return state_;
    }

    /// A value in [0, n), n > 0, by a remainder: slightly biased, but exactly
    /// reproducible, which is what matters here.
    std::uint32_t below(std::uint32_t n) noexcept { return next() % n; }

private:
    std::uint32_t state_;
};

namespace detail {

/// Fixed made-up traffic; the indices drawn into these tables are part of the
/// deterministic output, so entries are only ever appended.
inline constexpr std::array<std::string_view, 10> log_paths{"/",
                                                            "/index.html",
                                                            "/about.html",
                                                            "/blog/2026/12/multiworker.html",
                                                            "/images/logo.png",
                                                            "/css/site.css",
                                                            "/robots.txt",
                                                            "/api/v1/items?page=2",
                                                            "/favicon.ico",
                                                            "/wp-login.php"};
inline constexpr std::array<std::string_view, 5> log_agents{
    "curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Wget/1.21.3",
    "python-requests/2.31.0"};
inline constexpr std::array<std::string_view, 3> log_referrers{"-", "https://www.example.com/",
                                                               "https://search.example.org/?q=multiworker"};

/// An address that looks like a public one: not 0/8, 10/8, 100/8, 127/8,
/// 169/8, 172/8, 192/8 or multicast and above (crudely: whole first octets),
/// and no .0 or .255 host part, so that pointing the example at a real whois
/// server asks about plausible addresses.
inline Ipv4 random_public_ipv4(LogRandom& random) noexcept {
    for (;;) {
        const auto first = static_cast<std::uint8_t>(1 + random.below(223));  // 1 ... 223
        if (first == 10 || first == 100 || first == 127 || first == 169 || first == 172 || first == 192) continue;
        const auto second = static_cast<std::uint8_t>(random.below(256));
        const auto third = static_cast<std::uint8_t>(random.below(256));
        const auto fourth = static_cast<std::uint8_t>(1 + random.below(254));  // 1 ... 254
        return {first, second, third, fourth};
    }
}

/// "[02/Dec/2026:10:00:00 +0000]" for `time`, by hand: strftime would follow
/// the C locale's month names and the time zone, this never does.
inline std::string log_timestamp(std::chrono::sys_seconds time) {
    static constexpr std::array<const char*, 12> months{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const auto day = std::chrono::floor<std::chrono::days>(time);
    const std::chrono::year_month_day date{day};
    const std::chrono::hh_mm_ss clock{time - day};
    char text[40];
    std::snprintf(text, sizeof text, "[%02u/%s/%04d:%02d:%02d:%02d +0000]", static_cast<unsigned>(date.day()),
                  months[static_cast<unsigned>(date.month()) - 1], static_cast<int>(date.year()),
                  static_cast<int>(clock.hours().count()), static_cast<int>(clock.minutes().count()),
                  static_cast<int>(clock.seconds().count()));
    return text;
}

/// An entry of `table`, drawn uniformly.
template <class T, std::size_t N>
const T& pick(LogRandom& random, const std::array<T, N>& table) noexcept {
    return table[random.below(static_cast<std::uint32_t>(N))];
}

}  // namespace detail

/// `lines` log lines whose client addresses are exactly `distinct_ips`
/// distinct IPv4 addresses, each at least once, the same for the same
/// arguments everywhere: the input the example's report (and a test of it) is
/// computed from. Time starts at 02/Dec/2026:10:00:00 +0000 and moves on 0-2 s
/// a line. Throws std::invalid_argument when the counts cannot be met
/// (distinct_ips > lines, none for a non-empty log, or more than 2^24 of
/// either).
inline std::vector<std::string> generate_access_log(std::size_t lines, std::size_t distinct_ips, unsigned seed) {
    constexpr std::size_t most = std::size_t{1} << 24;
    if (distinct_ips > lines || (lines > 0 && distinct_ips == 0) || lines > most) {
        throw std::invalid_argument{"generate_access_log: cannot write " + std::to_string(lines) + " lines with " +
                                    std::to_string(distinct_ips) + " distinct addresses"};
    }
    LogRandom random{seed};

    std::vector<Ipv4> addresses;
    addresses.reserve(distinct_ips);
    std::set<Ipv4> seen;
    while (addresses.size() < distinct_ips) {
        const Ipv4 address = detail::random_public_ipv4(random);
        if (seen.insert(address).second) addresses.push_back(address);
    }

    // Whose line is which: every address once, the rest skewed towards the first addresses (the
    // smaller of two uniform draws), then all of it shuffled (Fisher-Yates).
    const auto distinct = static_cast<std::uint32_t>(distinct_ips);
    std::vector<std::uint32_t> owner_of_line(distinct_ips);
    for (std::uint32_t i = 0; i < distinct; ++i) owner_of_line[i] = i;
    while (owner_of_line.size() < lines) {
        const std::uint32_t a = random.below(distinct);
        const std::uint32_t b = random.below(distinct);
        owner_of_line.push_back(std::min(a, b));
    }
    for (std::size_t i = owner_of_line.size(); i > 1; --i) {
        const std::uint32_t j = random.below(static_cast<std::uint32_t>(i));
        std::swap(owner_of_line[i - 1], owner_of_line[j]);
    }

    std::chrono::sys_seconds time =
        std::chrono::sys_days{std::chrono::year{2026} / std::chrono::December / 2} + std::chrono::hours{10};
    std::vector<std::string> log;
    log.reserve(lines);
    for (const std::uint32_t who : owner_of_line) {
        const std::string_view path = detail::pick(random, detail::log_paths);
        std::string_view method = "GET";
        if (path.starts_with("/api/") && random.below(4) == 0) {
            method = "POST";
        } else if (random.below(20) == 0) {
            method = "HEAD";
        }
        int status = 200;
        if (path == "/wp-login.php") {
            status = 404;
        } else if (const std::uint32_t roll = random.below(20); roll == 0) {
            status = 304;
        } else if (roll == 1) {
            status = 404;
        } else if (roll == 2) {
            status = 301;
        }
        std::string bytes = "-";  // Apache's %b: "-" for no body
        if (method != "HEAD" && status != 304) {
            const std::uint32_t size = status == 200 ? 200 + random.below(20000) : (status == 404 ? 209u : 235u);
            bytes = std::to_string(size);
        }
        const std::string_view referrer = detail::pick(random, detail::log_referrers);
        const std::string_view agent = detail::pick(random, detail::log_agents);

        std::string line = to_string(addresses[who]);
        line += " - - ";
        line += detail::log_timestamp(time);
        line += " \"";
        line += method;
        line += ' ';
        line += path;
        line += " HTTP/1.1\" ";
        line += std::to_string(status);
        line += ' ';
        line += bytes;
        line += " \"";
        line += referrer;
        line += "\" \"";
        line += agent;
        line += '"';
        log.push_back(std::move(line));
        time += std::chrono::seconds{random.below(3)};
    }
    return log;
}

/// The client address of a log line (its first field) if that is a dotted
/// IPv4 address, std::nullopt otherwise (an IPv6 client, a host name logged
/// with HostnameLookups, a damaged line): the one field the example needs, and
/// only in a form that is safe to send as a whois query.
inline std::optional<std::string> ip_of_log_line(std::string_view line) {
    const std::string_view field = line.substr(0, line.find(' '));
    if (!parse_ipv4(field)) return std::nullopt;
    return std::string{field};
}

/// Writes `log` to `path`, a line each ("\n"), replacing the file: the example
/// reads a log from disk like a real one. Throws std::runtime_error naming the
/// file when it cannot be written completely.
inline void write_access_log(const std::filesystem::path& path, const std::vector<std::string>& log) {
    std::ofstream out{path, std::ios::binary | std::ios::trunc};
    if (!out) throw std::runtime_error{"cannot create the access log " + path.string()};
    for (const std::string& line : log) out << line << '\n';
    out.close();
    if (!out) throw std::runtime_error{"cannot write the access log " + path.string()};
}

/// Calls `on_line(std::string_view)` for each line of the file at `path`, in
/// order, without its "\n" or "\r\n": reads a log of any size in constant
/// memory. Throws std::runtime_error naming the file when it cannot be opened
/// or read; whatever `on_line` throws passes through.
template <class OnLine>
void for_each_log_line(const std::filesystem::path& path, OnLine&& on_line) {
    std::ifstream in{path, std::ios::binary};
    if (!in) throw std::runtime_error{"cannot open the access log " + path.string()};
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        on_line(std::string_view{line});
    }
    if (in.bad()) throw std::runtime_error{"cannot read the access log " + path.string()};
}

/// Every line of the file at `path` (see for_each_log_line): what
/// write_access_log wrote, back.
inline std::vector<std::string> read_access_log(const std::filesystem::path& path) {
    std::vector<std::string> log;
    for_each_log_line(path, [&](std::string_view line) { log.emplace_back(line); });
    return log;
}

}  // namespace whois_example
