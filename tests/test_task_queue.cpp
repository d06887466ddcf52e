// TaskQueue, where tasks wait for a worker: order and bytes across many
// chunks, large arguments held rather than copied, the closing flag, tasks
// taken into the caller's place, moving tasks from one queue to another, and
// chunks that no forked process shares.

#include <multiworker/detail/task_queue.hpp>

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

using multiworker::TaskId;
using multiworker::detail::Bytes;
using multiworker::detail::TaskQueue;

namespace {

/// The arguments of task `i`: a length that varies from 0 to 40 bytes, and
/// bytes that depend on `i`.
Bytes arguments_of(std::uint64_t i) {
    Bytes bytes;
    for (std::uint64_t k = 0; k < i % 41; ++k) bytes.push_back(static_cast<char>('a' + (i + k) % 26));
    return bytes;
}

std::string text(std::span<const char> bytes) {
    return {bytes.begin(), bytes.end()};
}

/// Takes every task of `queue`, checking that they are tasks first .. last with arguments_of().
void expect_tasks(TaskQueue& queue, std::uint64_t first, std::uint64_t last) {
    REQUIRE(queue.size() == last - first + 1);
    for (std::uint64_t i = first; i <= last; ++i) {
        const TaskQueue::Task task = queue.front();
        REQUIRE(task.id.value() == i);
        REQUIRE(text(task.arguments) == text(arguments_of(i)));
        REQUIRE_FALSE(task.closing);
        queue.pop_front();
    }
    REQUIRE(queue.empty());
}

}  // namespace

TEST_CASE("tasks come out in order with their bytes, across many chunks") {
    TaskQueue queue;
    constexpr std::uint64_t count = 200'000;  // about 4 MB of records: dozens of chunks
    for (std::uint64_t i = 1; i <= count; ++i) queue.push_back(TaskId{i}, arguments_of(i));
    std::uint64_t visited = 0;
    queue.for_each([&visited](const TaskQueue::Task& task) { REQUIRE(task.id.value() == ++visited); });
    REQUIRE(visited == count);
    expect_tasks(queue, 1, count);

    // Emptied, it takes tasks again.
    for (std::uint64_t i = 1; i <= 3; ++i) queue.push_back(TaskId{i}, arguments_of(i));
    expect_tasks(queue, 1, 3);
}

TEST_CASE("large arguments are held where they are, not copied") {
    TaskQueue queue;
    Bytes large(100'000, 'x');
    large.back() = 'y';
    const char* storage = large.data();
    queue.push_back(TaskId{7}, std::move(large));
    queue.push_back(TaskId{8}, arguments_of(8));
    queue.push_back(TaskId{9}, std::span<const char>{std::string(5000, 'z')});  // a view: copied once

    const TaskQueue::Task first = queue.front();
    REQUIRE(first.id.value() == 7);
    REQUIRE(first.arguments.data() == storage);
    REQUIRE(first.arguments.size() == 100'000);
    REQUIRE(first.arguments.back() == 'y');
    queue.pop_front();
    REQUIRE(text(queue.front().arguments) == text(arguments_of(8)));
    queue.pop_front();
    REQUIRE(text(queue.front().arguments) == std::string(5000, 'z'));
    // The last one is left for the destructor to free (the sanitizer build
    // fails on a leak).
}

TEST_CASE("the closing flag stays with its task") {
    TaskQueue queue;
    queue.push_back(TaskId{1}, arguments_of(1));
    queue.push_back(TaskId{2}, Bytes{}, true);
    queue.push_back(TaskId{3}, Bytes(2000, 'c'), true);
    TaskQueue moved;
    moved.append(queue);
    REQUIRE_FALSE(moved.front().closing);
    moved.pop_front();
    REQUIRE(moved.front().closing);
    REQUIRE(moved.front().arguments.empty());
    moved.pop_front();
    REQUIRE(moved.front().closing);
    REQUIRE(moved.front().arguments.size() == 2000);
}

TEST_CASE("a task is taken into the caller's place - small arguments copied, large ones moved, the flag returned") {
    TaskQueue queue;
    Bytes large(100'000, 'x');
    const char* storage = large.data();
    queue.push_back(TaskId{1}, arguments_of(30));
    queue.push_back(TaskId{2}, std::move(large), true);
    queue.push_back(TaskId{3}, Bytes{});

    // A place that held another task: everything in it is replaced.
    TaskId id{99};
    Bytes arguments(50'000, 'q');
    CHECK_FALSE(queue.take_front_into(id, arguments));
    CHECK(id.value() == 1);
    CHECK(text(arguments) == text(arguments_of(30)));
    // A fresh place, as the dispatcher's in-flight slots are: the large arguments are moved in.
    Bytes fresh;
    CHECK(queue.take_front_into(id, fresh));
    CHECK(id.value() == 2);
    CHECK(fresh.data() == storage);
    CHECK(fresh.size() == 100'000);
    CHECK_FALSE(queue.take_front_into(id, arguments));
    CHECK(id.value() == 3);
    CHECK(arguments.empty());
    CHECK(queue.empty());
}

TEST_CASE("append moves every task behind the others, and the source is reusable") {
    TaskQueue backlog;
    TaskQueue inbox;
    for (std::uint64_t i = 1; i <= 10; ++i) backlog.push_back(TaskId{i}, arguments_of(i));
    for (std::uint64_t i = 11; i <= 50'000; ++i) inbox.push_back(TaskId{i}, arguments_of(i));
    inbox.push_back(TaskId{50'001}, Bytes(3000, 'h'));  // held by pointer: its ownership moves too

    backlog.append(inbox);
    REQUIRE(inbox.empty());
    REQUIRE(backlog.size() == 50'001);

    // A few tasks at a time, as the event loop takes them from the inbox.
    for (std::uint64_t i = 50'002; i <= 50'004; ++i) {
        inbox.push_back(TaskId{i}, arguments_of(i));
        backlog.append(inbox);
    }
    backlog.append(inbox);  // empty: nothing changes
    REQUIRE(backlog.size() == 50'004);

    for (std::uint64_t i = 1; i <= 50'004; ++i) {
        const TaskQueue::Task task = backlog.front();
        REQUIRE(task.id.value() == i);
        if (i == 50'001) {
            REQUIRE(text(task.arguments) == std::string(3000, 'h'));
        } else {
            REQUIRE(text(task.arguments) == text(arguments_of(i)));
        }
        backlog.pop_front();
    }
    REQUIRE(backlog.empty());
}

TEST_CASE("a queue emptied by taking its tasks takes more, one by one or by whole chunks") {
    TaskQueue backlog;
    TaskQueue inbox;
    for (int round = 0; round < 3; ++round) {
        const std::uint64_t first = 1 + static_cast<std::uint64_t>(round) * 30'000;
        for (std::uint64_t i = first; i < first + 30'000; ++i) inbox.push_back(TaskId{i}, arguments_of(i));
        backlog.append(inbox);  // several chunks change hands
        for (std::uint64_t i = first; i < first + 30'000; ++i) {
            const TaskQueue::Taken task = backlog.take_front();
            REQUIRE(task.id.value() == i);
            REQUIRE(text(task.arguments) == text(arguments_of(i)));
        }
        REQUIRE(backlog.empty());
        backlog.push_back(TaskId{1}, arguments_of(1));
        expect_tasks(backlog, 1, 1);
    }
}

TEST_CASE("clear drops every task, held arguments included") {
    TaskQueue queue;
    for (std::uint64_t i = 1; i <= 20'000; ++i)
        queue.push_back(TaskId{i}, i % 100 == 0 ? Bytes(1500, 'q') : arguments_of(i));
    queue.clear();
    REQUIRE(queue.empty());
    REQUIRE(queue.size() == 0);
    queue.push_back(TaskId{1}, arguments_of(1));
    expect_tasks(queue, 1, 1);
}

TEST_CASE("a process forked while tasks wait does not share their memory") {
    TaskQueue queue;
    queue.push_back(TaskId{1}, Bytes(16, 'm'));
    const auto page = reinterpret_cast<std::uintptr_t>(queue.front().arguments.data()) & ~std::uintptr_t{4095};
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // msync() fails with ENOMEM on an address that is not mapped.
        const bool mapped = ::msync(reinterpret_cast<void*>(page), 4096, MS_ASYNC) == 0 || errno != ENOMEM;
        ::_exit(mapped ? 1 : 0);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    REQUIRE(::msync(reinterpret_cast<void*>(page), 4096, MS_ASYNC) == 0);  // still the parent's
}
