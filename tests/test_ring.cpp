// The shared-memory byte ring and the framing on top of it: data integrity
// across wrap-around, between threads and between processes; validation of
// corrupt counters and frames.

#include <multiworker/detail/ring.hpp>
#include <multiworker/detail/system.hpp>
#include <multiworker/detail/wire.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <new>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

using namespace multiworker::detail;

namespace {

/// A ring in anonymous shared memory, usable across fork().
struct SharedRing {
    explicit SharedRing(std::size_t capacity) : mapping{sizeof(RingCounters) + capacity} {
        auto* counters = new (mapping.data()) RingCounters{};
        ring = ByteRing{counters, reinterpret_cast<char*>(mapping.data()) + sizeof(RingCounters), capacity};
    }
    SharedMapping mapping;
    ByteRing ring;
};

std::vector<char> pattern(std::size_t size, unsigned seed) {
    std::vector<char> bytes(size);
    std::mt19937 generator{seed};
    for (char& byte : bytes) byte = static_cast<char>(generator());
    return bytes;
}

/// Streams `data` through the ring from a producer thread and returns what the consumer read.
std::vector<char> pass_through(ByteRing ring, const std::vector<char>& data) {
    std::thread producer{[&] {
        std::size_t sent = 0;
        while (sent < data.size()) {
            sent += ring.write_some(std::span{data}.subspan(sent, std::min<std::size_t>(1000, data.size() - sent)));
        }
    }};
    std::vector<char> received(data.size());
    std::size_t got = 0;
    while (got < received.size()) got += ring.read_some(std::span{received}.subspan(got));
    producer.join();
    return received;
}

}  // namespace

TEST_CASE("bytes survive wrap-around in odd-sized pieces") {
    SharedRing shared{4096};
    const auto data = pattern(1 << 20, 1);
    std::vector<char> out;
    std::size_t sent = 0;
    std::mt19937 sizes{2};
    while (out.size() < data.size()) {
        const std::size_t want = 1 + sizes() % 3000;
        sent += shared.ring.write_some(std::span{data}.subspan(sent, std::min(want, data.size() - sent)));
        std::vector<char> chunk(1 + sizes() % 3000);
        chunk.resize(shared.ring.read_some(chunk));
        out.insert(out.end(), chunk.begin(), chunk.end());
    }
    CHECK(out == data);
}

TEST_CASE("a full ring accepts nothing and an empty ring yields nothing") {
    SharedRing shared{4096};
    const auto data = pattern(5000, 3);
    CHECK(shared.ring.write_some(data) == 4096);
    CHECK_FALSE(shared.ring.has_space());
    CHECK(shared.ring.write_some(data) == 0);
    std::vector<char> out(5000);
    CHECK(shared.ring.read_some(out) == 4096);
    CHECK_FALSE(shared.ring.has_readable());
    CHECK(shared.ring.read_some(out) == 0);
}

TEST_CASE("a producer thread and a consumer thread keep the stream intact") {
    SharedRing shared{1024};
    const auto data = pattern(8 << 20, 4);
    CHECK(pass_through(shared.ring, data) == data);
}

TEST_CASE("a forked child and its parent share the ring") {
    test_support::Watchdog watchdog{std::chrono::seconds{60}};
    SharedRing shared{2048};
    const auto data = pattern(4 << 20, 5);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        std::size_t sent = 0;
        while (sent < data.size()) sent += shared.ring.write_some(std::span{data}.subspan(sent));
        ::_exit(0);
    }
    std::vector<char> received(data.size());
    std::size_t got = 0;
    while (got < received.size()) got += shared.ring.read_some(std::span{received}.subspan(got));
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(received == data);
}

TEST_CASE("a consumer reports a producer's impossible tail as corruption") {
    SharedRing shared{4096};
    auto* counters = reinterpret_cast<RingCounters*>(shared.mapping.data());
    counters->tail.store(5000);  // more than a capacity ahead of head
    CHECK_THROWS_AS(shared.ring.readable(1), RingCorrupted);
    std::vector<char> out(10);
    CHECK_THROWS_AS(shared.ring.read_some(out), RingCorrupted);
}

TEST_CASE("a producer reports a consumer's impossible head as corruption") {
    SharedRing shared{4096};
    auto* counters = reinterpret_cast<RingCounters*>(shared.mapping.data());
    const std::vector<char> full(4096, 'x');
    REQUIRE(shared.ring.write_some(full) == full.size());
    counters->head.store(5000);  // ahead of everything written
    const std::vector<char> more(1, 'y');
    CHECK_THROWS_AS(shared.ring.write_some(more), RingCorrupted);
}

TEST_CASE("a head that moves backwards is reported as corruption") {
    SharedRing shared{4096};
    auto* counters = reinterpret_cast<RingCounters*>(shared.mapping.data());
    const std::vector<char> full(4096, 'x');
    REQUIRE(shared.ring.write_some(full) == full.size());
    std::vector<char> out(100);
    REQUIRE(shared.ring.read_some(out) == out.size());
    REQUIRE(shared.ring.write_some(std::span{full}.first(100)) == 100);  // the producer saw head at 100
    counters->head.store(50);
    CHECK_THROWS_AS(shared.ring.write_some(std::span{full}.first(1)), RingCorrupted);
}

TEST_CASE("stage_whole stages two pieces entirely or not at all - across the wrap-around") {
    SharedRing shared{4096};
    const std::vector<char> head = pattern(32, 10);
    const std::vector<char> body = pattern(3000, 11);
    REQUIRE(shared.ring.stage_whole(head, body));
    CHECK_FALSE(shared.ring.stage_whole(head, body));  // 1,064 bytes left: nothing is staged
    CHECK(shared.ring.publish());
    std::vector<char> out(head.size() + body.size());
    REQUIRE(shared.ring.read_some(out) == out.size());
    REQUIRE(shared.ring.stage_whole(head, body));  // fits again once read; wraps past the end
    CHECK(shared.ring.publish());
    std::vector<char> wrapped(out.size());
    REQUIRE(shared.ring.read_some(wrapped) == wrapped.size());
    CHECK(wrapped == out);
    CHECK(std::equal(head.begin(), head.end(), out.begin()));
    CHECK(std::equal(body.begin(), body.end(), out.begin() + static_cast<std::ptrdiff_t>(head.size())));
    CHECK_FALSE(shared.ring.stage_whole(std::vector<char>(4097), {}));  // larger than the ring
}

TEST_CASE("staged bytes stay invisible until published and taken bytes stay unfree until released") {
    SharedRing shared{4096};
    auto* counters = reinterpret_cast<RingCounters*>(shared.mapping.data());
    const std::vector<char> data(100, 'z');
    REQUIRE(shared.ring.stage(data) == data.size());
    CHECK(counters->tail.load() == 0);
    CHECK(shared.ring.publish());
    CHECK(counters->tail.load() == 100);
    CHECK_FALSE(shared.ring.publish());
    std::vector<char> out(60);
    REQUIRE(shared.ring.take(out) == out.size());
    CHECK(counters->head.load() == 0);
    CHECK(shared.ring.release());
    CHECK(counters->head.load() == 60);
}

TEST_CASE("peek shows published bytes in place only when they do not wrap, and skip takes them") {
    SharedRing shared{4096};
    auto* counters = reinterpret_cast<RingCounters*>(shared.mapping.data());
    const std::vector<char> first = pattern(4000, 12);
    REQUIRE(shared.ring.stage(first) == first.size());
    CHECK(shared.ring.peek(10).empty());  // staged, not published
    shared.ring.publish();
    const std::span<const char> seen = shared.ring.peek(first.size());
    REQUIRE(seen.size() == first.size());
    CHECK(std::ranges::equal(seen, first));
    CHECK(shared.ring.peek(first.size() + 1).empty());  // more than is published
    shared.ring.skip(first.size());
    CHECK(counters->head.load() == 0);  // taken, not yet released
    CHECK(shared.ring.release());
    CHECK(counters->head.load() == first.size());

    const std::vector<char> second = pattern(200, 13);  // 96 bytes before the end, 104 after it
    REQUIRE(shared.ring.write_some(second) == second.size());
    CHECK(shared.ring.peek(second.size()).empty());
    const std::span<const char> before_end = shared.ring.peek(96);
    CHECK(std::equal(before_end.begin(), before_end.end(), second.begin()));
    shared.ring.skip(96);
    CHECK(std::ranges::equal(shared.ring.peek(104), std::span{second}.subspan(96)));
}

TEST_CASE("small whole frames are read in place - others are left to a frame reader") {
    constexpr std::size_t capacity = 8192;  // more than the largest in-place frame
    SharedRing shared{capacity};
    const auto send = [&shared](FrameHeader header, std::span<const char> payload) {
        header.length = payload.size();
        REQUIRE(shared.ring.stage_whole(header_bytes(header), payload));
        shared.ring.publish();
    };

    SECTION("a small frame, then nothing") {
        const std::vector<char> payload = pattern(40, 14);
        send(FrameHeader{.kind = FrameKind::result, .sequence = 5}, payload);
        const auto frame = peek_whole_frame(shared.ring, 1 << 20, 4096);
        REQUIRE(frame);
        CHECK(frame->header.sequence == 5);
        CHECK(std::ranges::equal(frame->payload, payload));
        shared.ring.skip(frame->size());
        CHECK_FALSE(peek_whole_frame(shared.ring, 1 << 20, 4096));
    }
    SECTION("a frame whose payload is not all published yet") {
        FrameHeader header{.kind = FrameKind::result, .sequence = 1, .length = 100};
        REQUIRE(shared.ring.write_some(header_bytes(header)) == sizeof header);
        CHECK_FALSE(peek_whole_frame(shared.ring, 1 << 20, 4096));
        FrameReader reader{1 << 20};
        CHECK_FALSE(reader.poll(shared.ring));  // the reader takes the header and waits for the rest
        REQUIRE(shared.ring.write_some(pattern(100, 15)) == 100);
        CHECK(reader.poll(shared.ring));
    }
    SECTION("a payload above the in-place limit") {
        send(FrameHeader{.kind = FrameKind::result, .sequence = 1}, std::vector<char>(4097));
        CHECK_FALSE(peek_whole_frame(shared.ring, 1 << 20, 4096));
    }
    SECTION("a frame across the ring's end") {
        std::vector<char> out(capacity - 96);  // the next frame's header fits before the end, its payload not
        send(FrameHeader{.kind = FrameKind::result}, std::vector<char>(out.size() - sizeof(FrameHeader)));
        REQUIRE(shared.ring.read_some(out) == out.size());
        const std::vector<char> payload = pattern(100, 16);
        send(FrameHeader{.kind = FrameKind::result, .sequence = 2}, payload);
        CHECK_FALSE(peek_whole_frame(shared.ring, 1 << 20, 4096));
        FrameReader reader{1 << 20};
        REQUIRE(reader.poll(shared.ring));
        CHECK(std::ranges::equal(reader.take_payload(), payload));
    }
    SECTION("an invalid header") {
        send(FrameHeader{.magic = 0xbeef, .kind = FrameKind::result}, {});
        CHECK_THROWS_AS(peek_whole_frame(shared.ring, 1 << 20, 4096), ProtocolError);
    }
    SECTION("a length beyond the limit") {
        send(FrameHeader{.kind = FrameKind::result}, std::vector<char>(101));
        CHECK_THROWS_AS(peek_whole_frame(shared.ring, 100, 4096), ProtocolError);
    }
}

TEST_CASE("a frame reader holds a small whole frame in the ring and reassembles the others") {
    SharedRing shared{4096};
    auto* counters = reinterpret_cast<RingCounters*>(shared.mapping.data());
    const auto send = [&shared](std::uint32_t sequence, std::span<const char> payload) {
        FrameHeader header{.kind = FrameKind::result, .sequence = sequence, .length = payload.size()};
        REQUIRE(shared.ring.stage_whole(header_bytes(header), payload));
        shared.ring.publish();
    };
    FrameReader reader{1 << 20};
    const std::vector<char> small = pattern(100, 17);
    send(1, small);
    REQUIRE(reader.poll_ring(shared.ring, 4096));
    CHECK(reader.header().sequence == 1);
    CHECK(std::ranges::equal(reader.payload(), small));
    CHECK(counters->head.load() == 0);  // held in the ring: taken, not released
    CHECK(std::ranges::equal(reader.take_payload(), small));
    CHECK_FALSE(reader.poll_ring(shared.ring, 4096));
    shared.ring.release();

    const std::vector<char> over_limit = pattern(200, 18);  // above this call's in-place limit
    send(2, over_limit);
    REQUIRE(reader.poll_ring(shared.ring, 100));
    CHECK(std::ranges::equal(reader.take_payload(), over_limit));
    shared.ring.release();

    const std::vector<char> wrapping = pattern(4000, 19);  // its end lies past the ring's end
    send(3, wrapping);
    REQUIRE(reader.poll_ring(shared.ring, 4096));
    CHECK(reader.header().sequence == 3);
    CHECK(std::ranges::equal(reader.take_payload(), wrapping));
}

TEST_CASE("frames larger than the ring stream through it - the reader knows it is mid-frame meanwhile") {
    SharedRing shared{4096};
    const std::vector<char> payload = pattern(100'000, 6);
    FrameWriter writer{FrameHeader{.kind = FrameKind::result, .sequence = 3}, payload};
    FrameReader reader{1 << 20};
    CHECK_FALSE(reader.mid_frame());
    bool received = false;
    int pieces = 0;
    while (!received) {
        writer.poll(shared.ring);
        received = reader.poll(shared.ring);
        if (!received) {
            CHECK(reader.mid_frame());  // the event loop spins for the next piece rather than sleeping
            ++pieces;
        }
    }
    CHECK(pieces > 20);
    CHECK_FALSE(reader.mid_frame());
    CHECK(writer.done());
    CHECK(reader.header().kind == FrameKind::result);
    CHECK(reader.header().sequence == 3);
    CHECK(std::ranges::equal(reader.take_payload(), payload));
    CHECK_FALSE(reader.mid_frame());
}

TEST_CASE("a payload in two pieces arrives as one - also when they straddle the ring's end") {
    SharedRing shared{4096};
    const std::vector<char> head = pattern(1000, 8);
    const std::vector<char> body = pattern(50'000, 9);
    FrameReader reader{1 << 20};
    for (int frame = 0; frame < 3; ++frame) {
        FrameWriter writer{FrameHeader{.kind = FrameKind::result, .sequence = 1}, head, body};
        bool received = false;
        while (!received) {
            writer.poll(shared.ring);
            received = reader.poll(shared.ring);
        }
        CHECK(reader.header().length == head.size() + body.size());
        const Bytes payload = reader.take_payload();
        CHECK(std::equal(head.begin(), head.end(), payload.begin()));
        CHECK(std::equal(body.begin(), body.end(), payload.begin() + static_cast<std::ptrdiff_t>(head.size())));
    }
}

TEST_CASE("a frame writer that kept its payload finishes after the caller's copy is gone") {
    SharedRing shared{4096};
    auto payload = std::make_unique<std::vector<char>>(pattern(10'000, 7));
    const std::vector<char> expected = *payload;
    FrameWriter writer{FrameHeader{.kind = FrameKind::task, .sequence = 1}, *payload};
    REQUIRE_FALSE(writer.poll(shared.ring));  // part of it is out
    writer.keep_payload();
    std::fill(payload->begin(), payload->end(), '\0');
    payload.reset();
    FrameReader reader{1 << 20};
    bool received = false;
    while (!received) {
        writer.poll(shared.ring);
        received = reader.poll(shared.ring);
    }
    CHECK(std::ranges::equal(reader.take_payload(), expected));
}

TEST_CASE("invalid frame headers are protocol errors") {
    SharedRing shared{4096};
    FrameHeader header{.kind = FrameKind::result, .sequence = 1, .length = 0};
    FrameReader reader{1000};

    SECTION("bad magic") {
        header.magic = 0xbeef;
    }
    SECTION("bad kind") {
        header.kind = static_cast<FrameKind>(99);
    }
    SECTION("length beyond the limit") {
        header.length = 1001;
    }

    const auto* raw = reinterpret_cast<const char*>(&header);
    REQUIRE(shared.ring.write_some(std::span{raw, sizeof header}) == sizeof header);
    CHECK_THROWS_AS(reader.poll(shared.ring), ProtocolError);
}

TEST_CASE("a large result frame is read straight into its value - other frames into a buffer") {
    SharedRing shared{4096};
    using Payload = PlainValuePayload<std::vector<double>>;
    int made = 0;
    FrameReader reader{1 << 24, [&made](std::size_t bytes) -> std::unique_ptr<LargePayload> {
                           ++made;
                           return Payload::make(bytes);
                       }};
    const auto receive = [&](FrameKind kind, const Bytes& payload) {
        FrameWriter writer{FrameHeader{.kind = kind, .sequence = 1}, payload};
        bool received = false;
        while (!received) {
            writer.poll(shared.ring);
            received = reader.poll(shared.ring);
        }
    };
    std::vector<double> numbers(20'000);
    for (std::size_t i = 0; i < numbers.size(); ++i) numbers[i] = static_cast<double>(i) / 3;
    Bytes encoded;
    encode_values(encoded, numbers);

    receive(FrameKind::result, encoded);
    std::unique_ptr<LargePayload> large = reader.take_large();
    REQUIRE(large != nullptr);
    CHECK(reader.take_payload().empty());
    CHECK(static_cast<Payload&>(*large).take() == numbers);

    receive(FrameKind::failure, encoded);  // only results are offered
    CHECK(reader.take_large() == nullptr);
    CHECK(reader.take_payload().size() == encoded.size());

    Bytes odd = encoded;
    odd.push_back('x');  // no vector of doubles encodes to this size: read as bytes
    receive(FrameKind::result, odd);
    CHECK(reader.take_large() == nullptr);
    CHECK(reader.take_payload().size() == odd.size());

    Bytes small;
    encode_values(small, std::vector<double>{1.5});
    receive(FrameKind::result, small);  // below large_buffer_bytes: not offered
    CHECK(reader.take_large() == nullptr);
    CHECK(reader.take_payload().size() == small.size());
    CHECK(made == 2);
}

TEST_CASE("a large payload whose element count lies is a decode error") {
    auto payload = PlainValuePayload<std::string>::make(8 + 100);
    REQUIRE(payload != nullptr);
    CHECK(payload->body().size() == 100);
    const std::uint64_t lie = 99;
    std::memcpy(payload->head().data(), &lie, sizeof lie);
    CHECK_THROWS_AS(payload->take(), DecodeError);
    CHECK(PlainValuePayload<std::vector<int>>::make(8 + 6) == nullptr);  // not a whole number of ints
    CHECK(PlainValuePayload<std::string>::make(7) == nullptr);           // no room for the count
}
