#pragma once

// Where a Supervisor's processes run: forked processes (ForkHost, on the
// WorkerPool every engine uses) or threads of the caller (ThreadHost, for
// in-process mode). Both report to the same WorkerPool::Events, so the
// supervisor's logic does not know which it drives. A host's slot is a node
// of the mesh less one (node 0 is the parent).

#include <multiworker/detail/crash_report.hpp>
#include <multiworker/detail/system.hpp>
#include <multiworker/detail/worker_logging.hpp>
#include <multiworker/detail/worker_loop.hpp>
#include <multiworker/detail/worker_pool.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace multiworker::detail {

/// The body of one process (or thread) for a slot: records how it ended in
/// the node's status block and returns.
using SlotBody = std::function<void(int slot)>;

class ProcessHost {
public:
    virtual ~ProcessHost() = default;
    virtual void start() = 0;
    virtual void spawn(int slot) = 0;
    /// Ends the slot's process now; a thread cannot be: false then.
    virtual bool kill(int slot, std::string why) = 0;
    virtual void handle_events(WorkerPool::Events& events) = 0;
    virtual void await_spawns(std::chrono::milliseconds timeout, WorkerPool::Events& events) = 0;
    /// Readable when handle_events() has something (-1: none).
    [[nodiscard]] virtual int events_fd() const = 0;
    [[nodiscard]] virtual bool no_processes() const = 0;
    [[nodiscard]] virtual pid_t pid(int slot) const = 0;
    virtual void shut_down() = 0;
};

class ForkHost final : public ProcessHost {
public:
    ForkHost(std::size_t slots, LogCollector& logs, spdlog::level::level_enum log_level, SlotBody body,
             std::vector<std::string> names)
        : body_{std::move(body)},
          log_level_{log_level},
          pool_{slots, logs, true, [this](int slot, const WorkerBirth& birth) { run_child(slot, birth); },
                std::move(names)} {}

    void start() override { pool_.start(); }
    void spawn(int slot) override { pool_.spawn(slot); }
    bool kill(int slot, std::string why) override {
        pool_.kill(slot, ErrorKind::worker_died, std::move(why));
        return true;
    }
    void handle_events(WorkerPool::Events& events) override { pool_.handle_events(events); }
    void await_spawns(std::chrono::milliseconds timeout, WorkerPool::Events& events) override {
        pool_.await_spawns(timeout, events, "multiworker::Supervisor::run()");
    }
    [[nodiscard]] int events_fd() const override { return pool_.server_fd(); }
    [[nodiscard]] bool no_processes() const override { return pool_.no_processes(); }
    [[nodiscard]] pid_t pid(int slot) const override { return pool_.pid(slot); }
    void shut_down() override { pool_.shut_down(); }

private:
    // As run_worker_process() sets a worker up; SIGINT is ignored because
    // Ctrl-C reaches the whole foreground process group, and it is the
    // parent's to turn into an orderly stop (Interrupted).
    [[noreturn]] void run_child(int slot, const WorkerBirth& birth) noexcept {
        try {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != birth.server) ::_exit(0);
            ::signal(SIGINT, SIG_IGN);
            ::signal(SIGTERM, SIG_DFL);
            std::setvbuf(stdout, nullptr, _IOLBF, BUFSIZ);
            install_worker_loggers(birth.pipes.log, log_level_, birth.inherited_loggers);
            install_crash_reporter(birth.pipes.log);
            end_worker_on_exit();
            body_(slot);
        } catch (...) {
            end_worker(worker_start_failed_status);
        }
        end_worker(0);
    }

    SlotBody body_;
    spdlog::level::level_enum log_level_;
    WorkerPool pool_;
};

class ThreadHost final : public ProcessHost {
public:
    ThreadHost(std::size_t slots, SlotBody body) : body_{std::move(body)}, threads_(slots), wake_{make_eventfd()} {}
    ~ThreadHost() override { shut_down(); }

    void start() override {}
    void spawn(int slot) override {
        Thread& thread = threads_[static_cast<std::size_t>(slot)];
        if (thread.thread.joinable()) thread.thread.join();
        thread.running = true;
        post(Event{slot, true});
        thread.thread = std::thread{[this, slot] {
            body_(slot);
            post(Event{slot, false});
        }};
    }
    bool kill(int /*slot*/, std::string /*why*/) override { return false; }
    void handle_events(WorkerPool::Events& events) override {
        std::uint64_t count = 0;
        [[maybe_unused]] const ssize_t ignored = ::read(wake_.get(), &count, sizeof count);
        for (;;) {
            Event event{};
            {
                const std::lock_guard lock{mutex_};
                if (events_.empty()) return;
                event = events_.front();
                events_.pop_front();
            }
            if (event.started) {
                events.worker_started(event.slot);
                continue;
            }
            Thread& thread = threads_[static_cast<std::size_t>(event.slot)];
            thread.thread.join();
            thread.running = false;
            events.worker_exited(WorkerExit{event.slot, 0, 0, "ended", "", ErrorKind::worker_died});
        }
    }
    void await_spawns(std::chrono::milliseconds /*timeout*/, WorkerPool::Events& /*events*/) override {}
    [[nodiscard]] int events_fd() const override { return wake_.get(); }
    [[nodiscard]] bool no_processes() const override {
        for (const Thread& thread : threads_)
            if (thread.running) return false;
        return true;
    }
    [[nodiscard]] pid_t pid(int /*slot*/) const override { return 0; }
    void shut_down() override {
        for (Thread& thread : threads_)
            if (thread.thread.joinable()) thread.thread.join();
    }

private:
    struct Event {
        int slot;
        bool started;
    };
    struct Thread {
        std::thread thread;
        bool running = false;
    };

    void post(Event event) {
        {
            const std::lock_guard lock{mutex_};
            events_.push_back(event);
        }
        const std::uint64_t one = 1;
        [[maybe_unused]] const ssize_t ignored = ::write(wake_.get(), &one, sizeof one);
    }

    SlotBody body_;
    std::vector<Thread> threads_;
    FileDescriptor wake_;
    std::mutex mutex_;
    std::deque<Event> events_;
};

}  // namespace multiworker::detail
