#pragma once

// A small HTTP/1.1 server on loopback that stands in for Wikipedia's year
// pages, so the crawler demo works on a machine without internet: a
// cpp-httplib server (httplib::Server).
//
// It runs in a process of its own, forked by the YearServer object (before the
// caller starts any thread) and stopped and reaped by its destructor. Not on
// threads of the caller: the crawler's fork server is forked from the caller
// at start() and would copy, locked, any lock that a server thread holds at
// that moment (the sanitizers' allocator does not guard against fork); and
// httplib::Server's constructor ignores SIGPIPE for the whole process. The
// server binds port 0 on 127.0.0.1, so the kernel picks a free port, and the
// constructor returns once it accepts connections. /wiki/1950 ... /wiki/1999
// are generated pages; a year in mentioning_years() mentions "Marilyn Monroe".
// Every request waits `delay` before the answer: a stand-in for the latency of
// a real network, which is what makes a crawler worth running in parallel.

#include <httplib.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <limits>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

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
        int ready[2];  // the server writes its port here once it accepts connections
        if (::pipe2(ready, O_CLOEXEC) != 0) throw std::system_error{errno, std::generic_category(), "pipe"};
        const pid_t parent = ::getpid();
        pid_ = ::fork();
        if (pid_ < 0) {
            const int error = errno;
            ::close(ready[0]);
            ::close(ready[1]);
            throw std::system_error{error, std::generic_category(), "fork of the year server"};
        }
        if (pid_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) ::_exit(0);
            ::close(ready[0]);
            ::_exit(serve(delay, ready[1]));
        }
        ::close(ready[1]);
        ssize_t got = 0;
        do got = ::read(ready[0], &port_, sizeof port_);
        while (got < 0 && errno == EINTR);
        ::close(ready[0]);
        if (got != static_cast<ssize_t>(sizeof port_)) {  // it exited before listening
            ::waitpid(pid_, nullptr, 0);
            throw std::runtime_error{"the year server could not listen on a loopback port"};
        }
    }
    YearServer(const YearServer&) = delete;
    YearServer& operator=(const YearServer&) = delete;
    ~YearServer() {
        if (::getpid() != owner_) return;  // a forked copy of the owner: the server is not its child
        ::kill(pid_, SIGTERM);             // it stops, joins its threads and exits
        ::waitpid(pid_, nullptr, 0);
    }

    [[nodiscard]] int port() const noexcept { return port_; }
    /// The URL pattern of its pages, with %s for the year.
    [[nodiscard]] std::string base() const { return "http://127.0.0.1:" + std::to_string(port_) + "/wiki/%s"; }

private:
    // A thread for each connection, joined at shutdown, as many as there are connections: httplib's
    // default pool has 8 threads, and a ninth kept-alive connection would wait for one of them.
    struct ThreadPerConnection final : httplib::TaskQueue {
        void enqueue(std::function<void()> task) override { threads.emplace_back(std::move(task)); }
        void shutdown() override {
            for (auto& thread : threads) thread.join();
        }
        std::vector<std::thread> threads;  // only the listening thread touches it
    };

    // The server process: reports its port on `ready`, serves until SIGTERM, then stops, joins
    // every thread and returns the exit status.
    static int serve(std::chrono::milliseconds delay, int ready) noexcept {
        try {
            sigset_t term;
            ::sigemptyset(&term);
            ::sigaddset(&term, SIGTERM);
            ::pthread_sigmask(SIG_BLOCK, &term, nullptr);  // in every thread to come; sigwait() takes it
            std::mutex mutex;
            std::condition_variable wake;
            bool stopping = false;  // ends the delays at once

            httplib::Server server;
            server.new_task_queue = [] { return new ThreadPerConnection; };
            server.set_keep_alive_max_count(std::numeric_limits<std::size_t>::max());
            server.set_keep_alive_timeout(1);  // an idle connection never holds up the stop for long
            server.set_tcp_nodelay(true);      // headers and body are two writes: no 40 ms delayed ACK
            server.Get(".*", [&](const httplib::Request& request, httplib::Response& response) {
                {
                    std::unique_lock lock{mutex};
                    wake.wait_for(lock, delay, [&] { return stopping; });
                }
                int year = 0;
                if (std::sscanf(request.path.c_str(), "/wiki/%d", &year) == 1 && year >= 1950 && year <= 1999 &&
                    request.path == "/wiki/" + std::to_string(year)) {
                    response.set_content(year_page(year), "text/html");
                } else {
                    response.status = 404;
                    response.set_content("<html><body>No such page</body></html>", "text/html");
                }
            });
            const int port = server.bind_to_any_port("127.0.0.1");
            if (port <= 0) return 1;
            std::thread listener{[&] { server.listen_after_bind(); }};
            while (!server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds{1});
            const bool told = ::write(ready, &port, sizeof port) == static_cast<ssize_t>(sizeof port);
            ::close(ready);
            int received = 0;
            if (told) ::sigwait(&term, &received);
            {
                std::lock_guard lock{mutex};
                stopping = true;
            }
            wake.notify_all();
            server.stop();  // closes the listening socket: listen_after_bind() joins the connections
            listener.join();
            return 0;
        } catch (...) {
            return 1;
        }
    }

    pid_t owner_ = ::getpid();
    int port_ = 0;
    pid_t pid_ = -1;
};

}  // namespace crawler
