#pragma once

// Helpers shared by the tests: a watchdog that turns a hang into a failure,
// and probes for leftover child processes and shared-memory files.

#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>

#include <dirent.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace test_support {

/// True in a build with AddressSanitizer, under which a worker takes
/// milliseconds to fork and start (its shadow memory makes fork() slow).
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool address_sanitizer = true;
#else
inline constexpr bool address_sanitizer = false;
#endif

/// Aborts the whole test program (failing the test) if it is still alive
/// `limit` after construction. Destroy it to disarm.
///
/// The constructor returns only once the watchdog's thread is idle, waiting:
/// a test that forks right after must not copy a half-started thread's locks
/// (the sanitizers' allocator does not guard against fork) into its child.
class Watchdog {
public:
    explicit Watchdog(std::chrono::seconds limit, std::string what = "test")
        : thread_{[this, limit, what = std::move(what)] {
              std::unique_lock lock{mutex_};
              running_ = true;
              disarmed_.notify_all();
              if (!disarmed_.wait_for(lock, limit, [this] { return done_; })) {
                  std::fprintf(stderr, "WATCHDOG: %s still running after %lld s: failing\n", what.c_str(),
                               static_cast<long long>(limit.count()));
                  std::fflush(stderr);
                  std::_Exit(97);
              }
          }} {
        std::unique_lock lock{mutex_};
        disarmed_.wait(lock, [this] { return running_; });
    }
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;
    ~Watchdog() {
        {
            std::lock_guard lock{mutex_};
            done_ = true;
        }
        disarmed_.notify_all();
        thread_.join();
    }

private:
    std::mutex mutex_;
    std::condition_variable disarmed_;
    bool done_ = false;
    bool running_ = false;
    std::thread thread_;
};

/// A worker method that sleeps `ms` milliseconds and returns `ms`: a task of
/// known, adjustable duration.
struct Sleeper {
    int sleep_ms(int ms) const {
        std::this_thread::sleep_for(std::chrono::milliseconds{ms});
        return ms;
    }
};

/// An spdlog sink that keeps every record, readable while others still log.
class CapturingSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    /// Everything logged so far, one formatted record per line.
    std::string text() {
        std::lock_guard lock{mutex_};
        return text_;
    }

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        spdlog::memory_buf_t formatted;
        formatter_->format(msg, formatted);
        text_.append(formatted.data(), formatted.size());
    }
    void flush_() override {}

private:
    std::string text_;
};

/// A logger writing to a new CapturingSink; returns both.
inline std::pair<std::shared_ptr<spdlog::logger>, std::shared_ptr<CapturingSink>> capturing_logger() {
    auto sink = std::make_shared<CapturingSink>();
    return {std::make_shared<spdlog::logger>("capture", sink), sink};
}

/// Direct children of this process, alive or zombie (from /proc).
inline std::vector<pid_t> child_pids() {
    std::vector<pid_t> children;
    for (const auto& task : std::filesystem::directory_iterator{"/proc/self/task"}) {
        std::ifstream in{task.path() / "children"};
        pid_t pid = 0;
        while (in >> pid) children.push_back(pid);
    }
    return children;
}

/// Names in /dev/shm, to compare before and after a test.
inline std::set<std::string> shm_entries() {
    std::set<std::string> names;
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator{"/dev/shm", error}) {
        names.insert(entry.path().filename().string());
    }
    return names;
}

/// True if `pid` names a live (non-zombie) process.
inline bool process_alive(pid_t pid) {
    std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
    std::string line;
    if (!std::getline(in, line)) return false;
    const auto close = line.rfind(')');
    return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

/// Points this process's stdout (or stderr) at `fd` while alive, and back after.
class Redirect {
public:
    Redirect(int target, int fd) : target_{target}, saved_{::dup(target)} {
        std::fflush(nullptr);
        ::dup2(fd, target_);
    }
    ~Redirect() {
        std::fflush(nullptr);
        ::dup2(saved_, target_);
        ::close(saved_);
    }
    Redirect(const Redirect&) = delete;
    Redirect& operator=(const Redirect&) = delete;

private:
    int target_;
    int saved_;
};

/// Counters in anonymous shared memory, written by forked workers and read
/// by the test while they run (each worker inherits the mapping).
class SharedCounters {
public:
    explicit SharedCounters(std::size_t count) : count_{count} {
        void* memory = ::mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED) throw std::runtime_error{"mmap of the shared counters failed"};
        values_ = static_cast<std::atomic<long long>*>(memory);
        for (std::size_t i = 0; i < count_; ++i) new (&values_[i]) std::atomic<long long>{0};
    }
    SharedCounters(const SharedCounters&) = delete;
    SharedCounters& operator=(const SharedCounters&) = delete;
    ~SharedCounters() { ::munmap(values_, bytes()); }

    std::atomic<long long>& operator[](std::size_t i) const noexcept { return values_[i]; }

private:
    std::size_t bytes() const noexcept { return count_ * sizeof(std::atomic<long long>); }

    std::size_t count_;
    std::atomic<long long>* values_ = nullptr;
};

}  // namespace test_support
