#pragma once

// A small HTTP/1.1 server on loopback that stands in for Wikipedia's year
// pages, so the crawler demo works on a machine without internet.
//
// It runs in a process of its own, forked by the YearServer object (before the
// caller starts any thread) and killed and reaped by its destructor. It binds
// port 0, so the kernel picks a free port. /wiki/1950 ... /wiki/1999 are
// generated pages; a year in mentioning_years() mentions "Marilyn Monroe".
// Every request waits `delay` before the answer: a stand-in for the latency of
// a real network, which is what makes a crawler worth running in parallel.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

namespace crawler {

/// The years whose generated page mentions Marilyn Monroe.
inline const std::set<int>& mentioning_years() {
    static const std::set<int> years{1952, 1953, 1954, 1955, 1956, 1957, 1959, 1960, 1961, 1962};
    return years;
}

/// The generated page for `year`.
inline std::string year_page(int year) {
    std::string body = "<html><head><title>" + std::to_string(year) + "</title></head><body><h1>" +
                       std::to_string(year) + "</h1><p>Events of the year " + std::to_string(year) + ".</p>";
    for (int i = 0; i < 200; ++i) body += "<p>Nothing remarkable happened on day " + std::to_string(i) + ".</p>";
    if (mentioning_years().count(year) != 0) body += "<p>Marilyn Monroe was in the news.</p>";
    return body + "</body></html>";
}

class YearServer {
public:
    explicit YearServer(std::chrono::milliseconds delay) {
        listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (listener_ < 0) throw std::system_error{errno, std::generic_category(), "socket"};
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t length = sizeof address;
        if (::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
            ::listen(listener_, 64) != 0 ||
            ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
            throw std::system_error{errno, std::generic_category(), "bind/listen on loopback"};
        }
        port_ = ntohs(address.sin_port);
        const pid_t parent = ::getpid();
        pid_ = ::fork();
        if (pid_ < 0) throw std::system_error{errno, std::generic_category(), "fork of the year server"};
        if (pid_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) ::_exit(0);
            serve(delay);
        }
        ::close(listener_);
    }
    YearServer(const YearServer&) = delete;
    YearServer& operator=(const YearServer&) = delete;
    ~YearServer() {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }

    [[nodiscard]] int port() const noexcept { return port_; }
    /// The URL pattern of its pages, with %s for the year.
    [[nodiscard]] std::string base() const { return "http://127.0.0.1:" + std::to_string(port_) + "/wiki/%s"; }

private:
    [[noreturn]] void serve(std::chrono::milliseconds delay) {
        for (;;) {
            const int connection = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
            if (connection < 0) continue;
            std::thread{[connection, delay] { answer(connection, delay); }}.detach();
        }
    }

    // Serves the requests of one keep-alive connection.
    static void answer(int connection, std::chrono::milliseconds delay) {
        std::string pending;
        char buffer[4096];
        for (;;) {
            std::size_t end = pending.find("\r\n\r\n");
            while (end == std::string::npos) {
                const ssize_t got = ::read(connection, buffer, sizeof buffer);
                if (got <= 0) {
                    ::close(connection);
                    return;
                }
                pending.append(buffer, static_cast<std::size_t>(got));
                end = pending.find("\r\n\r\n");
            }
            const std::string request = pending.substr(0, end);
            pending.erase(0, end + 4);
            std::this_thread::sleep_for(delay);
            const std::string response = respond(request);
            if (::write(connection, response.data(), response.size()) != static_cast<ssize_t>(response.size())) break;
        }
        ::close(connection);
    }

    static std::string respond(const std::string& request) {
        int year = 0;
        char path[256] = {};
        std::string status = "404 Not Found";
        std::string body = "<html><body>No such page</body></html>";
        if (std::sscanf(request.c_str(), "GET %255s", path) == 1 && std::sscanf(path, "/wiki/%d", &year) == 1 &&
            year >= 1950 && year <= 1999 && std::string{path} == "/wiki/" + std::to_string(year)) {
            status = "200 OK";
            body = year_page(year);
        }
        return "HTTP/1.1 " + status + "\r\nContent-Type: text/html\r\nContent-Length: " + std::to_string(body.size()) +
               "\r\n\r\n" + body;
    }

    int listener_ = -1;
    int port_ = 0;
    pid_t pid_ = -1;
};

}  // namespace crawler
