#pragma once

// Dotted IPv4 addresses for the whois example, shared by the access-log
// generator (which writes them and reads them back from log lines) and the
// embedded whois server (which derives an owner from them). Strict on
// purpose: a log's first field that is not exactly an address is not sent to a
// whois server as one.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace whois_example {

/// An IPv4 address as its four octets, most significant first: the form in
/// which the owner is derived from the first two.
using Ipv4 = std::array<std::uint8_t, 4>;

/// Parses exactly "a.b.c.d" (each 0-255, 1-3 digits, no leading zero, nothing
/// around it), so that whatever passes can be sent as a whois query verbatim
/// and prints back to the same text.
inline std::optional<Ipv4> parse_ipv4(std::string_view text) noexcept {
    Ipv4 address{};
    std::size_t at = 0;
    for (std::size_t octet = 0; octet < address.size(); ++octet) {
        if (octet > 0) {
            if (at >= text.size() || text[at] != '.') return std::nullopt;
            ++at;
        }
        const std::size_t first = at;
        unsigned value = 0;
        while (at < text.size() && at - first < 4 && text[at] >= '0' && text[at] <= '9') {
            value = value * 10 + static_cast<unsigned>(text[at] - '0');
            ++at;
        }
        const std::size_t digits = at - first;
        if (digits == 0 || digits > 3 || value > 255 || (digits > 1 && text[first] == '0')) return std::nullopt;
        address[octet] = static_cast<std::uint8_t>(value);
    }
    if (at != text.size()) return std::nullopt;
    return address;
}

/// The dotted form of `address`, the inverse of parse_ipv4: how addresses are
/// written into the log and into the server's answers.
inline std::string to_string(const Ipv4& address) {
    std::string text;
    for (std::size_t octet = 0; octet < address.size(); ++octet) {
        if (octet > 0) text += '.';
        text += std::to_string(address[octet]);
    }
    return text;
}

}  // namespace whois_example
