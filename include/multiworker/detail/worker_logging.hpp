#pragma once

// Central logging: every worker's spdlog records travel over a pipe of its own
// to one collector thread in the parent, which writes them to the sinks the
// user chose, tagged with the worker's index and pid. The same thread carries
// the workers' stdout and stderr, when captured (Options::worker_output), to
// the parent's own or to the sinks, a whole line at a time: it is their only
// writer, so lines of different workers cannot mix.
//
// In the child, the loggers inherited across fork() must never be used or
// destroyed: another parent thread may have held a sink mutex at the moment of
// the fork (it stays locked forever in the child), and an async logger's
// thread pool has no threads in the child, so its destructor waits forever.
// The child therefore parks the inherited loggers (leaked on purpose) and
// installs fresh ones whose sink sends each record with a single write(2).

#include <multiworker/detail/symbolize.hpp>
#include <multiworker/detail/system.hpp>
#include <multiworker/options.hpp>

#include <spdlog/details/log_msg.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace multiworker::detail {

/// Fixed part of one log record on the pipe; the logger name and text follow.
struct LogRecordHeader {
    static constexpr std::uint32_t expected_magic = 0x474c574d;  // "MWLG"
    static constexpr std::uint32_t max_text = 64 * 1024;
    static constexpr std::uint32_t max_name = 256;

    std::uint32_t magic = expected_magic;
    std::uint32_t level = 0;
    std::int64_t time_ns = 0;
    std::uint32_t name_length = 0;
    std::uint32_t text_length = 0;
};
static_assert(sizeof(LogRecordHeader) == 24);

/// Child side: an spdlog sink that sends each record as one write(2) on the pipe.
class PipeSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    explicit PipeSink(int fd) noexcept : fd_{fd} {}

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        LogRecordHeader header;
        header.level = static_cast<std::uint32_t>(msg.level);
        header.time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(msg.time.time_since_epoch()).count();
        header.name_length =
            static_cast<std::uint32_t>(std::min<std::size_t>(msg.logger_name.size(), LogRecordHeader::max_name));
        header.text_length =
            static_cast<std::uint32_t>(std::min<std::size_t>(msg.payload.size(), LogRecordHeader::max_text));
        record_.resize(sizeof header + header.name_length + header.text_length);
        std::memcpy(record_.data(), &header, sizeof header);
        std::memcpy(record_.data() + sizeof header, msg.logger_name.data(), header.name_length);
        std::memcpy(record_.data() + sizeof header + header.name_length, msg.payload.data(), header.text_length);
        // Records are far below the pipe buffer, so one write delivers each whole.
        write_all(fd_, record_.data(), record_.size());
    }
    void flush_() override {}

private:
    int fd_;
    std::vector<char> record_;
};

/// The loggers of the parent at the moment of a fork: what the child must
/// park. The default logger comes last.
inline std::vector<std::shared_ptr<spdlog::logger>> loggers_to_inherit() {
    std::vector<std::shared_ptr<spdlog::logger>> loggers;
    spdlog::apply_all([&loggers](const std::shared_ptr<spdlog::logger>& logger) { loggers.push_back(logger); });
    loggers.push_back(spdlog::default_logger());
    return loggers;
}

/// Child side: replaces every inherited logger (see loggers_to_inherit) by a
/// fresh one of the same name writing to `fd`.
inline void install_worker_loggers(int fd, spdlog::level::level_enum level,
                                   const std::vector<std::shared_ptr<spdlog::logger>>& inherited) {
    // Leaked on purpose: destroying these could block forever (see above).
    new std::vector<std::shared_ptr<spdlog::logger>>(inherited);
    auto sink = std::make_shared<PipeSink>(fd);
    const auto fresh = [&sink, level](const std::string& name) {
        auto logger = std::make_shared<spdlog::logger>(name, sink);
        logger->set_level(level);
        return logger;
    };
    const std::string default_name = inherited.empty() || !inherited.back() ? "" : inherited.back()->name();
    std::set<std::string> names;
    for (const auto& old : inherited) {
        if (old != nullptr && old->name() != default_name) names.insert(old->name());
    }
    spdlog::drop_all();
    for (const auto& name : names) spdlog::register_logger(fresh(name));
    spdlog::set_default_logger(fresh(default_name));
}

/// One record as read from a pipe; the views point into the reader's buffer.
struct LogRecord {
    spdlog::level::level_enum level;
    std::chrono::system_clock::time_point time;
    std::string_view logger_name;
    std::string_view text;
};

/// Calls `emit` for every complete record at the front of `pending` and
/// removes those bytes; an incomplete record stays for the next read. Returns
/// false if the bytes cannot be a record (the pipe is then useless). The bytes
/// come from a worker, so every field is checked before use.
template <class Emit>
bool extract_log_records(std::vector<char>& pending, Emit&& emit) {
    std::size_t offset = 0;
    bool valid = true;
    while (pending.size() - offset >= sizeof(LogRecordHeader)) {
        LogRecordHeader header;
        std::memcpy(&header, pending.data() + offset, sizeof header);
        if (header.magic != LogRecordHeader::expected_magic || header.name_length > LogRecordHeader::max_name ||
            header.text_length > LogRecordHeader::max_text || header.level >= spdlog::level::n_levels) {
            valid = false;
            break;
        }
        const std::size_t size = sizeof header + header.name_length + header.text_length;
        if (pending.size() - offset < size) break;
        const char* name = pending.data() + offset + sizeof header;
        const auto since_epoch =
            std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds{header.time_ns});
        emit(LogRecord{static_cast<spdlog::level::level_enum>(header.level),
                       std::chrono::system_clock::time_point{since_epoch}, std::string_view{name, header.name_length},
                       std::string_view{name + header.name_length, header.text_length}});
        offset += size;
    }
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(offset));
    return valid;
}

/// Parent side: reads every worker's pipe and forwards records to the user's sinks.
class LogCollector {
public:
    /// A captured output line longer than this is passed on in pieces of this size.
    static constexpr std::size_t max_output_line = 64 * 1024;

    LogCollector(std::vector<std::shared_ptr<spdlog::logger>> destinations, spdlog::level::level_enum level,
                 WorkerOutput output = WorkerOutput::forward)
        : destinations_{std::move(destinations)}, level_{level}, output_{output}, wake_{make_eventfd()} {}

    LogCollector(const LogCollector&) = delete;
    LogCollector& operator=(const LogCollector&) = delete;
    ~LogCollector() { stop(std::chrono::milliseconds{0}); }

    /// What a worker's pipe carries.
    enum class Stream { log_records, stdout_bytes, stderr_bytes };

    /// Adds a worker's pipe; may be called while the collector runs.
    /// `name` names the worker in each record ("worker 3", "whois worker 3"),
    /// `worker_index` it without the prefix.
    void add_source(int worker_index, pid_t pid, FileDescriptor read_end, Stream stream = Stream::log_records,
                    std::string name = {}) {
        // Two threads read a pipe (see drain_exited()): a read must never wait.
        ::fcntl(read_end.get(), F_SETFL, ::fcntl(read_end.get(), F_GETFL) | O_NONBLOCK);
        std::lock_guard lock{mutex_};
        if (name.empty()) name = "worker " + std::to_string(worker_index);
        sources_.push_back(Source{worker_index, pid, stream, std::move(read_end), {}, std::move(name)});
        const std::uint64_t one = 1;
        [[maybe_unused]] const ssize_t ignored = ::write(wake_.get(), &one, sizeof one);
    }

    void start() {
        thread_ = std::thread{[this] { run(); }};
        name_thread(thread_, "mw-log");
    }

    /// Writes a record of the parent's own (a worker died, was replaced, ...)
    /// to the same destinations, filtered by the same level. Thread-safe.
    void report(spdlog::level::level_enum level, const std::string& text) {
        if (level < level_) return;
        for (const auto& destination : destinations_) {
            destination->log(spdlog::source_loc{}, level, spdlog::string_view_t{"multiworker: " + text});
        }
    }

    /// Forwards every record an exited worker left in its pipe, now, so that
    /// its last words reach the sinks before anything the parent reports about
    /// its end (and before the results that end produces). Never blocks: a
    /// pipe still held open by a child of the worker is read as far as it goes.
    void drain_exited(pid_t pid) {
        constexpr int max_reads = 64;  // 4 MiB: a child of the worker may still be writing
        {
            std::lock_guard lock{mutex_};
            for (Source& source : sources_) {
                if (source.pid != pid) continue;
                pollfd readable{source.fd.get(), POLLIN, 0};
                for (int i = 0; i < max_reads && source.fd.valid() && ::poll(&readable, 1, 0) > 0; ++i) drain(source);
            }
            flush();
        }
        // The collector thread may poll a descriptor closed here: it rebuilds its set.
        const std::uint64_t one = 1;
        [[maybe_unused]] const ssize_t ignored = ::write(wake_.get(), &one, sizeof one);
    }

    /// Where the worker `pid` crashed ("in f at file:line, called
    /// from ..."), from its crash report, once; empty if it sent none. Call
    /// after drain_exited(pid).
    std::string take_crash_site(pid_t pid) {
        std::lock_guard lock{mutex_};
        const auto found = crash_sites_.find(pid);
        if (found == crash_sites_.end()) return {};
        std::string site = std::move(found->second);
        crash_sites_.erase(found);
        return site;
    }

    /// Waits until every source reached end-of-file (each worker exited and
    /// its last record is written), or `grace` passed; then ends the thread.
    void stop(std::chrono::milliseconds grace) {
        if (!thread_.joinable()) return;
        {
            std::lock_guard lock{mutex_};
            stop_deadline_ = std::chrono::steady_clock::now() + grace;
            stopping_ = true;
        }
        const std::uint64_t one = 1;
        [[maybe_unused]] const ssize_t ignored = ::write(wake_.get(), &one, sizeof one);
        thread_.join();
        // What a source still held at the deadline (a line without its end) is not lost.
        for (Source& source : sources_) {
            if (source.stream != Stream::log_records && source.fd.valid()) pass_output(source, true);
        }
        flush();
    }

private:
    struct Source {
        int worker_index;
        pid_t pid;
        Stream stream;
        FileDescriptor fd;
        std::vector<char> pending;  // bytes of a record, or of a line, not yet complete
        std::string name;           // "worker 3", or with its pipeline stage: "whois worker 3"
    };

    void run() {
        std::vector<pollfd> descriptors;
        for (;;) {
            bool stopping = false;
            std::chrono::steady_clock::time_point deadline;
            {
                std::lock_guard lock{mutex_};
                std::erase_if(sources_, [](const Source& s) { return !s.fd.valid(); });
                stopping = stopping_;
                deadline = stop_deadline_;
                descriptors.clear();
                descriptors.push_back(pollfd{wake_.get(), POLLIN, 0});
                for (const Source& source : sources_) descriptors.push_back(pollfd{source.fd.get(), POLLIN, 0});
            }
            if (stopping && (descriptors.size() == 1 || std::chrono::steady_clock::now() >= deadline)) return;
            const int timeout_ms = stopping ? 10 : -1;
            if (::poll(descriptors.data(), descriptors.size(), timeout_ms) < 0 && errno != EINTR) return;
            if (descriptors[0].revents != 0) {
                std::uint64_t count = 0;
                [[maybe_unused]] const ssize_t ignored = ::read(wake_.get(), &count, sizeof count);
            }
            std::lock_guard lock{mutex_};
            for (std::size_t i = 1; i < descriptors.size(); ++i) {
                if (descriptors[i].revents != 0) drain(sources_[i - 1]);
            }
            flush();
        }
    }

    // Reads what the pipe holds and passes on every complete record or line;
    // closes the source at end-of-file or on garbage (a worker's bytes are
    // untrusted), passing on an unfinished last line as it is.
    void drain(Source& source) {
        char buffer[64 * 1024];
        const ssize_t got = ::read(source.fd.get(), buffer, sizeof buffer);
        if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;  // another reader took it first
        if (got <= 0) {
            if (source.stream != Stream::log_records) pass_output(source, true);
            source.fd.reset();
            return;
        }
        source.pending.insert(source.pending.end(), buffer, buffer + got);
        if (source.stream != Stream::log_records) {
            pass_output(source, false);
            return;
        }
        const bool valid = extract_log_records(source.pending, [&](const LogRecord& record) {
            if (record.level == spdlog::level::critical && CrashSymbolizer::is_crash_report(record.text)) {
                emit_crash_report(source, record);
            } else {
                emit(source, record.level, record.logger_name, record.time, record.text);
            }
        });
        if (!valid) {
            emit(source, spdlog::level::err, {}, std::chrono::system_clock::now(),
                 "sent a malformed log record; its log pipe is closed");
            source.fd.reset();
        }
    }

    // A crash report, symbolized; its crash site is kept for the error of the
    // task the worker was running (see take_crash_site()).
    void emit_crash_report(const Source& source, const LogRecord& record) {
        CrashSymbolizer::Readable readable = symbolizer_.symbolize(record.text);
        emit(source, record.level, record.logger_name, record.time, readable.trace);
        if (!readable.site.empty()) crash_sites_[source.pid] = std::move(readable.site);
    }

    // Passes on the complete lines at the front of the source's bytes (all of
    // them at `end_of_stream`, and a piece of an over-long line), in one write
    // when forwarded: the collector is the only writer of worker output, so
    // lines of different workers never mix.
    void pass_output(Source& source, bool end_of_stream) {
        std::vector<char>& bytes = source.pending;
        std::size_t whole = 0;
        if (end_of_stream) {
            whole = bytes.size();
        } else if (const auto newline = std::find(bytes.rbegin(), bytes.rend(), '\n'); newline != bytes.rend()) {
            whole = static_cast<std::size_t>(bytes.rend() - newline);
        } else if (bytes.size() >= max_output_line) {
            whole = max_output_line;
        }
        if (whole == 0) return;
        const std::string_view text{bytes.data(), whole};
        if (output_ == WorkerOutput::log) {
            log_output_lines(source, text);
        } else {
            write_all(source.stream == Stream::stdout_bytes ? STDOUT_FILENO : STDERR_FILENO, text.data(), text.size());
        }
        bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(whole));
    }

    // WorkerOutput::log: each line a record, tagged with the stream's name.
    void log_output_lines(const Source& source, std::string_view text) {
        const std::string_view name = source.stream == Stream::stdout_bytes ? "stdout" : "stderr";
        while (!text.empty()) {
            const std::size_t end = std::min(text.find('\n'), text.size());
            emit(source, spdlog::level::info, name, std::chrono::system_clock::now(), text.substr(0, end));
            text.remove_prefix(std::min(end + 1, text.size()));
        }
    }

    void emit(const Source& source, spdlog::level::level_enum level, std::string_view logger_name,
              std::chrono::system_clock::time_point time, std::string_view text) {
        if (level < level_) return;
        std::string line = source.name + " (pid " + std::to_string(source.pid) + ")";
        if (!logger_name.empty()) line.append(" [").append(logger_name).append("]");
        line.append(": ").append(text);
        for (const auto& destination : destinations_) {
            destination->log(time, spdlog::source_loc{}, level, spdlog::string_view_t{line});
        }
    }

    void flush() {
        for (const auto& destination : destinations_) destination->flush();
    }

    std::vector<std::shared_ptr<spdlog::logger>> destinations_;
    spdlog::level::level_enum level_;
    WorkerOutput output_;
    FileDescriptor wake_;
    std::mutex mutex_;
    std::vector<Source> sources_;
    CrashSymbolizer symbolizer_;
    std::map<pid_t, std::string> crash_sites_;
    bool stopping_ = false;
    std::chrono::steady_clock::time_point stop_deadline_{};
    std::thread thread_;
};

}  // namespace multiworker::detail
