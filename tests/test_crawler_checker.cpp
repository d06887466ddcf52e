// The crawler example's Checker, unit-tested the way the library promises:
// in-process, no fork, against the local year server.

#include "checker.hpp"
#include "year_server.hpp"

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>

namespace {

using namespace std::chrono_literals;

std::string page(const crawler::YearServer& server, const std::string& name) {
    std::string url = server.base();
    return url.replace(url.find("%s"), 2, name);
}

/// A loopback port nobody listens on.
std::string refused_url() {
    const int probe = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    ::bind(probe, reinterpret_cast<sockaddr*>(&address), sizeof address);
    ::getsockname(probe, reinterpret_cast<sockaddr*>(&address), &length);
    ::close(probe);
    return "http://127.0.0.1:" + std::to_string(ntohs(address.sin_port)) + "/wiki/1954";
}

}  // namespace

TEST_CASE("Checker::check called directly finds the text - ignoring case") {
    crawler::YearServer server{0ms};  // forked before the watchdog's thread exists
    test_support::Watchdog watchdog{60s};
    crawler::Checker checker;
    CHECK(checker.check(page(server, "1954"), "marilyn monroe") == std::pair<std::string, bool>{"1954", true});
    CHECK(checker.check(page(server, "1970"), "MARILYN MONROE") == std::pair<std::string, bool>{"1970", false});
    CHECK_THROWS_WITH(checker.check(page(server, "2005"), "x"), Catch::Contains("HTTP 404"));
}

TEST_CASE("in-process mode runs the crawler's Checker with no fork") {
    crawler::YearServer server{0ms};  // forked before the watchdog's thread exists
    test_support::Watchdog watchdog{60s};
    multiworker::Processor<crawler::Checker, &crawler::Checker::check> processor{crawler::Checker{}, {.workers = 0}};
    for (int year = 1950; year < 2000; ++year) processor.add(page(server, std::to_string(year)), "marilyn monroe");
    processor.start();
    REQUIRE(processor.done());
    std::set<int> years;
    for (const auto& result : processor.get_results()) {
        REQUIRE(result.ok());
        if (result.value().second) years.insert(std::stoi(result.value().first));
    }
    CHECK(years == crawler::mentioning_years());
    CHECK(test_support::child_pids().size() == 1);  // only the server: no worker was forked
}

TEST_CASE("a 404 - a refused connection and a timeout are error results") {
    crawler::YearServer slow{3000ms};  // forked before the watchdog's thread exists
    crawler::YearServer fast{0ms};
    test_support::Watchdog watchdog{60s};
    crawler::Checker impatient;
    impatient.timeout_seconds = 1;
    multiworker::Processor<crawler::Checker, &crawler::Checker::check> processor{impatient, {.workers = 2}};
    const auto missing = processor.add(page(fast, "2005"), "x");
    const auto refused = processor.add(refused_url(), "x");
    const auto timed_out = processor.add(page(slow, "1954"), "x");
    const auto fine = processor.add(page(fast, "1954"), "monroe");
    processor.start();
    processor.wait();
    for (const auto& result : processor.get_results()) {
        if (result.id() == fine) {
            CHECK(result.value().second);
            continue;
        }
        REQUIRE_FALSE(result.ok());
        CHECK(result.error().kind() == multiworker::ErrorKind::exception);
        if (result.id() == missing) CHECK_THAT(result.error().message(), Catch::Contains("HTTP 404"));
        if (result.id() == refused) CHECK_THAT(result.error().message(), Catch::Contains("connect"));
        if (result.id() == timed_out) CHECK_THAT(result.error().message(), Catch::Contains("Timeout"));
    }
}
