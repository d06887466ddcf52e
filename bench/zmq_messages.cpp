// ZeroMQ peer of a multiworker message-passing benchmark (see also bench/message_peers.py, the Python peers, which
// run the same workloads and print the same lines).
//
// Transport: libzmq's C API over ipc:// (a Unix domain socket) between processes created with fork(). Each process
// creates its own context and sockets after the fork: a zmq context owns threads and must never be used across a fork.
// The parent binds (so it owns the socket files, unique by its pid and removed at the end), each child connects.
// Peers, as printed:
//   zmq_pair     PAIR sockets: ping-pong, stream, and broadcast (one PAIR per receiver, 8 sends per message:
//                PUB/SUB would send once, but drops messages past its high-water mark instead of blocking, so it
//                does not do the same job)
//   zmq_req_rep  REQ/REP, zmq's own request/reply pattern (its envelope frame included), for reqrep
//
// Workloads (a message is 16 bytes):
//   pingpong   a message bounced between two processes. pingpong_busy: median round trip over 20,000 back-to-back
//              round trips (after 1,000 untimed). pingpong_sleep: the initiator sleeps 2 ms before each of 300 round
//              trips, so the other side is asleep in recv and its wake-up is in the figure; the median of those.
//   stream     2,000,000 messages one way; the receiver counts them and sends the count back. Timed in the sender
//              from the first send to the count's arrival: us per message and messages/s.
//   broadcast  each of 100,000 messages sent to 8 receiver processes, timed until all 8 have counted all and said so.
//   reqrep     a request of an 8-byte id and 8 bytes of payload; the reply carries the id, which is checked.
//              20,000 timed (after 1,000 untimed), median round trip.
// Every child says it is ready (for reqrep, the untimed requests do) before any timing starts: start-up and
// connecting are never part of a figure. --quick runs 10x fewer iterations of everything.
//
// Output: a table, or with --json one JSON object per line and per (peer, workload), such as (on one line)
//   {"peer": "zmq_pair", "workload": "pingpong_busy", "median_us": 41.2,
//    "per_message_us": null, "messages_per_s": null}
// median_us for the round-trip workloads, per_message_us and messages_per_s for stream and broadcast; others null.
//
// Usage: zmq_messages [--json] [--quick] [--workloads pingpong,stream,broadcast,reqrep]
// Build: g++ -std=c++20 -O3 bench/zmq_messages.cpp -lzmq -o zmq_messages (or the CMake target, if libzmq3-dev is in)

#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using Message = std::array<char, 16>;

constexpr Message kMessage{'0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};
constexpr std::string_view kReady{"ready"};
constexpr int kReceivers = 8;
constexpr auto kPause = std::chrono::milliseconds(2);
// Every send and receive gives up after this long, so a process whose peer died reports it instead of hanging. The
// longest wait in a healthy run is a receiver draining its queue (1,000 messages, zmq's default high-water mark).
constexpr int kTimeoutMs = 10'000;

struct Sizes {
    std::uint64_t warmup, pingpong, sleeping, stream, broadcast, reqrep;
};

Sizes sizes_for(bool quick) {
    const std::uint64_t scale = quick ? 10 : 1;
    return {1'000 / scale, 20'000 / scale, 300 / scale, 2'000'000 / scale, 100'000 / scale, 20'000 / scale};
}

struct Result {
    std::string peer;
    std::string workload;
    std::optional<double> median_us;
    std::optional<double> per_message_us;
    std::optional<double> messages_per_s;
};

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Set by SIGINT, SIGTERM and SIGHUP in the parent. Dying of the signal would skip the destructors that kill the
// children and remove the socket files; instead the signal interrupts the blocking zmq call (EINTR) or is seen by the
// next one, and the run unwinds as from any other error.
volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_interrupt(int) {
    g_interrupted = 1;
}

// Without SA_RESTART, so that a blocked call returns EINTR rather than resuming.
void handle_interrupts(void (*handler)(int)) {
    struct sigaction action {};
    action.sa_handler = handler;
    sigemptyset(&action.sa_mask);
    for (const int signal : {SIGINT, SIGTERM, SIGHUP}) sigaction(signal, &action, nullptr);
}

[[noreturn]] void fail(const std::string& what) {
    const int error = zmq_errno();
    if (g_interrupted != 0) throw Error("interrupted");
    throw Error(what + ": " + (error == EAGAIN ? "timed out" : zmq_strerror(error)));
}

void check_interrupted() {
    if (g_interrupted != 0) throw Error("interrupted");
}

class Context {
public:
    Context() : context_(zmq_ctx_new()) {
        if (context_ == nullptr) fail("zmq_ctx_new");
    }
    // Declared before its sockets, so they are closed (and have lingered) by the time this runs.
    ~Context() { zmq_ctx_term(context_); }
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

    void* get() const { return context_; }

private:
    void* context_;
};

// Which side a socket is on decides how long it lingers at close. A child's last message (an echo, a reply, a count)
// is usually still on its way when the child closes, so the child waits for it to leave. The parent always receives
// the last message of an exchange, so nothing of its own is pending then: no linger, and an error path never waits.
enum class Side { parent, child };

class Socket {
public:
    Socket(const Context& context, int type, Side side) : socket_(zmq_socket(context.get(), type)) {
        if (socket_ == nullptr) fail("zmq_socket");
        set(ZMQ_RCVTIMEO, kTimeoutMs);
        set(ZMQ_SNDTIMEO, kTimeoutMs);
        set(ZMQ_LINGER, side == Side::child ? kTimeoutMs : 0);
    }
    ~Socket() {
        if (socket_ != nullptr) zmq_close(socket_);
    }
    Socket(Socket&& other) noexcept : socket_(std::exchange(other.socket_, nullptr)) {}
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    Socket& operator=(Socket&&) = delete;

    void bind(const std::string& endpoint) {
        if (zmq_bind(socket_, endpoint.c_str()) != 0) fail("zmq_bind " + endpoint);
    }
    void connect(const std::string& endpoint) {
        if (zmq_connect(socket_, endpoint.c_str()) != 0) fail("zmq_connect " + endpoint);
    }
    void send(const void* data, std::size_t size) {
        check_interrupted();
        if (zmq_send(socket_, data, size, 0) < 0) fail("zmq_send");
    }
    // zmq_recv returns the message's full size even when it truncated it, so a wrong-sized message is caught here.
    void recv_exact(void* data, std::size_t size) {
        check_interrupted();
        const int received = zmq_recv(socket_, data, size, 0);
        if (received < 0) fail("zmq_recv");
        if (static_cast<std::size_t>(received) != size)
            throw Error("received " + std::to_string(received) + " bytes, expected " + std::to_string(size));
    }

    void send(const Message& message) { send(message.data(), message.size()); }
    void recv(Message& message) { recv_exact(message.data(), message.size()); }
    void send_count(std::uint64_t count) { send(&count, sizeof count); }
    std::uint64_t recv_count() {
        std::uint64_t count = 0;
        recv_exact(&count, sizeof count);
        return count;
    }
    void send_ready() { send(kReady.data(), kReady.size()); }
    void await_ready() {
        std::array<char, kReady.size()> ready{};
        recv_exact(ready.data(), ready.size());
        if (std::string_view{ready.data(), ready.size()} != kReady) throw Error("expected a ready message");
    }

private:
    void set(int option, int value) {
        if (zmq_setsockopt(socket_, option, &value, sizeof value) != 0) fail("zmq_setsockopt");
    }

    void* socket_;
};

// A socket file's path, unique to this process and this endpoint. Named in the parent before forking, so both sides
// agree on it; removed when the parent is done (zmq removes a file it bound when it closes, but not on every error
// path). Children never run destructors: they leave by _exit.
class IpcPath {
public:
    IpcPath() : path_("/tmp/multiworker-zmq-messages-" + std::to_string(getpid()) + "-" + std::to_string(next_++)) {}
    ~IpcPath() { unlink(path_.c_str()); }
    IpcPath(const IpcPath&) = delete;
    IpcPath& operator=(const IpcPath&) = delete;

    std::string endpoint() const { return "ipc://" + path_; }

private:
    static inline int next_ = 0;
    std::string path_;
};

// The forked children of one workload. wait_all() reaps them and checks they succeeded; on an error path the
// destructor kills and reaps whatever is left, so no process outlives the run.
class Children {
public:
    Children() = default;
    Children(const Children&) = delete;
    Children& operator=(const Children&) = delete;
    ~Children() {
        for (const pid_t pid : pids_) kill(pid, SIGKILL);
        for (const pid_t pid : pids_) waitpid(pid, nullptr, 0);
    }

    // Must be called before the parent creates its zmq context, for the child to inherit no zmq threads' state.
    void spawn(const std::function<void()>& body) {
        const pid_t parent = getpid();
        std::fflush(nullptr);  // nothing buffered may be written twice, by parent and child
        const pid_t pid = fork();
        if (pid < 0) throw Error(std::string("fork: ") + std::strerror(errno));
        if (pid == 0) {
            // A child waiting for a parent that died would otherwise linger until its timeout.
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(1);
            // Dying of a signal is right for a child: its parent kills and reaps whatever is left anyway.
            handle_interrupts(SIG_DFL);
            int status = 0;
            try {
                body();
            } catch (const std::exception& error) {
                std::fprintf(stderr, "zmq_messages: child %d: %s\n", static_cast<int>(getpid()), error.what());
                status = 1;
            }
            _exit(status);
        }
        pids_.push_back(pid);
    }

    void wait_all() {
        bool failed = false;
        while (!pids_.empty()) {
            int status = 0;
            if (waitpid(pids_.back(), &status, 0) < 0) throw Error(std::string("waitpid: ") + std::strerror(errno));
            pids_.pop_back();
            failed = failed || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
        }
        if (failed) throw Error("a child failed");
    }

private:
    std::vector<pid_t> pids_;
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t mid = v.size() / 2;
    return v.size() % 2 == 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

double micros_since(Clock::time_point start) {
    return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

Result round_trip_result(std::string peer, std::string workload, const std::vector<double>& samples_us) {
    return {std::move(peer), std::move(workload), median(samples_us), std::nullopt, std::nullopt};
}

Result one_way_result(std::string peer, std::string workload, double elapsed_us, std::uint64_t count) {
    const double per_message = elapsed_us / static_cast<double>(count);
    return {std::move(peer), std::move(workload), std::nullopt, per_message, 1e6 / per_message};
}

// Microseconds of each of `count` round trips, each after `pause` (none when zero).
std::vector<double> round_trips(Socket& socket, std::uint64_t count, std::chrono::milliseconds pause) {
    std::vector<double> samples;
    samples.reserve(count);
    Message reply{};
    for (std::uint64_t i = 0; i < count; ++i) {
        if (pause.count() > 0) std::this_thread::sleep_for(pause);
        const auto start = Clock::now();
        socket.send(kMessage);
        socket.recv(reply);
        samples.push_back(micros_since(start));
    }
    return samples;
}

std::vector<Result> pingpong(const Sizes& n) {
    const IpcPath path;
    Children children;
    const std::uint64_t total = n.warmup + n.pingpong + n.sleeping;
    children.spawn([&] {
        const Context context;
        Socket socket(context, ZMQ_PAIR, Side::child);
        socket.connect(path.endpoint());
        socket.send_ready();
        Message message{};
        for (std::uint64_t i = 0; i < total; ++i) {
            socket.recv(message);
            socket.send(message);
        }
    });

    const Context context;
    Socket socket(context, ZMQ_PAIR, Side::parent);
    socket.bind(path.endpoint());
    socket.await_ready();
    round_trips(socket, n.warmup, {});
    const std::vector<double> busy = round_trips(socket, n.pingpong, {});
    const std::vector<double> sleeping = round_trips(socket, n.sleeping, kPause);
    children.wait_all();
    return {round_trip_result("zmq_pair", "pingpong_busy", busy),
            round_trip_result("zmq_pair", "pingpong_sleep", sleeping)};
}

// Microseconds from the first send until each of `receivers` children has counted all `count` messages.
double one_way(std::uint64_t count, int receivers) {
    const std::vector<IpcPath> paths(static_cast<std::size_t>(receivers));
    Children children;
    for (const IpcPath& path : paths) {
        children.spawn([&] {
            const Context context;
            Socket socket(context, ZMQ_PAIR, Side::child);
            socket.connect(path.endpoint());
            socket.send_ready();
            Message message{};
            for (std::uint64_t i = 0; i < count; ++i) socket.recv(message);
            socket.send_count(count);
        });
    }

    const Context context;
    std::vector<Socket> sockets;
    sockets.reserve(paths.size());
    for (const IpcPath& path : paths) {
        sockets.emplace_back(context, ZMQ_PAIR, Side::parent);
        sockets.back().bind(path.endpoint());
    }
    for (Socket& socket : sockets) socket.await_ready();

    const auto start = Clock::now();
    for (std::uint64_t i = 0; i < count; ++i)
        for (Socket& socket : sockets) socket.send(kMessage);
    for (Socket& socket : sockets)
        if (socket.recv_count() != count) throw Error("a receiver counted the wrong number of messages");
    const double elapsed = micros_since(start);
    children.wait_all();
    return elapsed;
}

std::vector<Result> stream(const Sizes& n) {
    return {one_way_result("zmq_pair", "stream", one_way(n.stream, 1), n.stream)};
}

std::vector<Result> broadcast(const Sizes& n) {
    return {one_way_result("zmq_pair", "broadcast", one_way(n.broadcast, kReceivers), n.broadcast)};
}

// A request or a reply: the id, then 8 bytes of payload.
Message frame(std::uint64_t id, std::string_view payload) {
    Message message{};
    std::memcpy(message.data(), &id, sizeof id);
    std::memcpy(message.data() + sizeof id, payload.data(), std::min(payload.size(), message.size() - sizeof id));
    return message;
}

std::uint64_t id_of(const Message& message) {
    std::uint64_t id = 0;
    std::memcpy(&id, message.data(), sizeof id);
    return id;
}

std::vector<Result> reqrep(const Sizes& n) {
    const IpcPath path;
    Children children;
    const std::uint64_t total = n.warmup + n.reqrep;
    children.spawn([&] {
        const Context context;
        Socket socket(context, ZMQ_REP, Side::child);
        socket.connect(path.endpoint());
        Message request{};
        for (std::uint64_t i = 0; i < total; ++i) {
            socket.recv(request);
            socket.send(frame(id_of(request), "reply..."));
        }
    });

    // REP cannot speak first, so no ready message: the untimed requests wait for the connection instead.
    const Context context;
    Socket socket(context, ZMQ_REQ, Side::parent);
    socket.bind(path.endpoint());
    std::vector<double> samples;
    samples.reserve(n.reqrep);
    Message reply{};
    for (std::uint64_t id = 0; id < total; ++id) {
        const auto start = Clock::now();
        socket.send(frame(id, "request."));
        socket.recv(reply);
        const double elapsed = micros_since(start);
        if (id_of(reply) != id) throw Error("reply to request " + std::to_string(id) + " carries another id");
        if (id >= n.warmup) samples.push_back(elapsed);
    }
    children.wait_all();
    return {round_trip_result("zmq_req_rep", "reqrep", samples)};
}

struct Workload {
    std::string_view name;
    std::vector<Result> (*run)(const Sizes&);
};

constexpr std::array<Workload, 4> kWorkloads{{
    {"pingpong", pingpong},
    {"stream", stream},
    {"broadcast", broadcast},
    {"reqrep", reqrep},
}};

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr,
                 "zmq_messages: %s\nusage: zmq_messages [--json] [--quick] "
                 "[--workloads pingpong,stream,broadcast,reqrep]\n",
                 why.c_str());
    std::exit(2);
}

std::vector<Workload> parse_workloads(std::string_view list) {
    std::vector<Workload> chosen;
    while (!list.empty()) {
        const std::size_t comma = list.find(',');
        const std::string_view name = list.substr(0, comma);
        const auto found =
            std::find_if(kWorkloads.begin(), kWorkloads.end(), [name](const Workload& w) { return w.name == name; });
        if (found == kWorkloads.end()) usage("unknown workload: " + std::string{name});
        chosen.push_back(*found);
        list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    }
    if (chosen.empty()) usage("no workload given");
    return chosen;
}

std::string json_number(const std::optional<double>& value) {
    if (!value) return "null";
    std::array<char, 32> text{};
    std::snprintf(text.data(), text.size(), "%.9g", *value);
    return text.data();
}

std::string table_number(const std::optional<double>& value, int digits) {
    if (!value) return "-";
    std::array<char, 32> text{};
    std::snprintf(text.data(), text.size(), "%.*f", digits, *value);
    return text.data();
}

void print(const Result& r, bool json) {
    if (json) {
        std::printf(
            "{\"peer\": \"%s\", \"workload\": \"%s\", \"median_us\": %s, \"per_message_us\": %s, "
            "\"messages_per_s\": %s}\n",
            r.peer.c_str(), r.workload.c_str(), json_number(r.median_us).c_str(), json_number(r.per_message_us).c_str(),
            json_number(r.messages_per_s).c_str());
    } else {
        std::printf("%-16s%-18s%12s%10s%14s\n", r.peer.c_str(), r.workload.c_str(),
                    table_number(r.median_us, 2).c_str(), table_number(r.per_message_us, 3).c_str(),
                    table_number(r.messages_per_s, 0).c_str());
    }
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    bool json = false;
    bool quick = false;
    std::vector<Workload> workloads(kWorkloads.begin(), kWorkloads.end());
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg{argv[i]};
        if (arg == "--json") {
            json = true;
        } else if (arg == "--quick") {
            quick = true;
        } else if (arg == "--workloads" && i + 1 < argc) {
            workloads = parse_workloads(argv[++i]);
        } else {
            usage("unknown or incomplete argument: " + std::string{arg});
        }
    }

    const Sizes sizes = sizes_for(quick);
    handle_interrupts(on_interrupt);
    if (!json) std::printf("%-16s%-18s%12s%10s%14s\n", "peer", "workload", "median us", "us/msg", "msgs/s");
    for (const Workload& workload : workloads) {
        try {
            for (const Result& result : workload.run(sizes)) print(result, json);
        } catch (const std::exception& error) {
            std::fprintf(stderr, "zmq_messages: %.*s: %s\n", static_cast<int>(workload.name.size()),
                         workload.name.data(), error.what());
            return 1;
        }
    }
}
