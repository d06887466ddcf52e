#pragma once

// Thin, error-checked wrappers over the Linux calls the forked backend uses.

#include <boost/interprocess/anonymous_shared_memory.hpp>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

namespace multiworker::detail {

[[noreturn]] inline void throw_errno(const std::string& what) {
    throw std::system_error{errno, std::generic_category(), "multiworker: " + what};
}

/// Owns a file descriptor; closes it once.
class FileDescriptor {
public:
    FileDescriptor() noexcept = default;
    explicit FileDescriptor(int fd) noexcept : fd_{fd} {}
    FileDescriptor(FileDescriptor&& other) noexcept : fd_{std::exchange(other.fd_, -1)} {}
    FileDescriptor& operator=(FileDescriptor&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    ~FileDescriptor() { reset(); }

    [[nodiscard]] int get() const noexcept { return fd_; }
    [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
    void reset() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

/// Names the calling thread (at most 15 characters), so that top -H, gdb and
/// perf tell the library's threads apart from the program's.
inline void name_this_thread(const char* name) noexcept {
    ::prctl(PR_SET_NAME, name);
}

/// Names `thread` from the thread that started it: the name is then in
/// place when the starter goes on (a test or a debugger looking right after
/// start() sees it), which the thread naming itself cannot promise.
inline void name_thread(std::thread& thread, const char* name) noexcept {
    ::pthread_setname_np(thread.native_handle(), name);
}

/// A counter-mode, non-blocking eventfd: the wake-up channel of a Doorbell.
inline FileDescriptor make_eventfd() {
    const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) throw_errno("eventfd");
    return FileDescriptor{fd};
}

/// A descriptor that becomes readable when process `pid` exits (Linux 5.3+).
inline FileDescriptor open_pidfd(pid_t pid) {
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) throw_errno("pidfd_open");
    return FileDescriptor{fd};
}

/// write(2) of the whole buffer, retrying on EINTR and short writes. False on error.
inline bool write_all(int fd, const char* data, std::size_t size) noexcept {
    while (size > 0) {
        const ssize_t written = ::write(fd, data, size);
        if (written < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        data += written;
        size -= static_cast<std::size_t>(written);
    }
    return true;
}

/// Asks for transparent huge pages behind a large buffer that is about to be
/// written for the first time: a 256 MiB message then takes 128 page faults
/// instead of 65536, which otherwise cost more than copying the bytes. Only a
/// hint; harmless where the kernel does not support it.
inline void advise_huge_pages(void* data, std::size_t size) noexcept {
    constexpr std::uintptr_t huge_page = std::uintptr_t{2} << 20;
    if (size < 2 * huge_page) return;
    const auto begin = (reinterpret_cast<std::uintptr_t>(data) + huge_page - 1) & ~(huge_page - 1);
    const auto end = (reinterpret_cast<std::uintptr_t>(data) + size) & ~(huge_page - 1);
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

/// Maps every page of a buffer about to be written, in one system call.
///
/// Why: on the virtual machines this library is measured on, a page fault
/// costs about 11 us, while populating costs under 1 us a page; a queue of a
/// hundred thousand tasks, or a ring, touches thousands of fresh pages. Only
/// worth it for buffers that will be written whole. Harmless where the kernel
/// lacks MADV_POPULATE_WRITE (before Linux 5.14): the pages then fault as usual.
inline void prefault(void* data, std::size_t size) noexcept {
#ifndef MADV_POPULATE_WRITE
    constexpr int MADV_POPULATE_WRITE = 23;
#endif
    constexpr std::uintptr_t page = 4096;
    constexpr std::size_t worth_it = 16 * page;
    if (size < worth_it) return;
    const auto begin = (reinterpret_cast<std::uintptr_t>(data) + page - 1) & ~(page - 1);
    const auto end = (reinterpret_cast<std::uintptr_t>(data) + size) & ~(page - 1);
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
}

/// Grows `values` to hold at least `count` elements, with its new storage
/// prefaulted, when the growth is large enough for that to pay. When the
/// caller knows that `likely_total` elements will be held, that is the size
/// it grows to at once: exactly the room needed, not twice it.
template <class Vector>
void reserve_prefaulted(Vector& values, std::size_t count, std::size_t likely_total = 0) {
    if (count <= values.capacity()) return;
    Vector bigger;
    bigger.reserve(std::max({count, likely_total, values.capacity() + values.capacity() / 2}));
    prefault(bigger.data(), bigger.capacity() * sizeof(typename Vector::value_type));
    bigger.insert(bigger.end(), std::make_move_iterator(values.begin()), std::make_move_iterator(values.end()));
    values.swap(bigger);
}

/// Anonymous shared memory (Boost.Interprocess's anonymous_shared_memory(), a
/// MAP_SHARED | MAP_ANONYMOUS mapping): mapped before fork(), shared with every
/// child, and gone with the last process that maps it. It has no name, so
/// nothing is ever left in /dev/shm, and no lock guards it that a dying
/// worker could hold.
class SharedMapping {
public:
    SharedMapping() noexcept = default;
    explicit SharedMapping(std::size_t size) {
        try {
            region_ = boost::interprocess::anonymous_shared_memory(size);
        } catch (const boost::interprocess::interprocess_exception& e) {
            throw std::system_error{e.get_native_error(), std::generic_category(),
                                    "multiworker: mapping " + std::to_string(size) + " bytes of shared memory"};
        }
    }

    [[nodiscard]] std::byte* data() const noexcept { return static_cast<std::byte*>(region_.get_address()); }
    [[nodiscard]] std::size_t size() const noexcept { return region_.get_size(); }

private:
    boost::interprocess::mapped_region region_;
};

}  // namespace multiworker::detail
