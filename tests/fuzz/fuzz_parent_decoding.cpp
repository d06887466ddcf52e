// libFuzzer target over everything the parent decodes from a worker: frames
// read from a result ring (in arbitrary pieces, or in place), failure reports, encoded
// results of several types, and log records from a log pipe. The property is
// that no input crashes, overflows, hangs or leaks: bad bytes must surface
// as ProtocolError / RingCorrupted / DecodeError or a false return.
//
// Input layout: byte 0 selects the decoder, byte 1 the read size, the rest is
// the stream. Build and run with ./scripts/fuzz.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/codec.hpp>
#include <multiworker/detail/ring.hpp>
#include <multiworker/detail/wire.hpp>
#include <multiworker/detail/worker_logging.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

using namespace multiworker::detail;

namespace {

/// A byte source that hands out the input in pieces of at most `step` bytes.
class ChunkedSource {
public:
    ChunkedSource(std::span<const char> bytes, std::size_t step) : bytes_{bytes}, step_{step} {}
    std::size_t read_some(std::span<char> out) {
        const std::size_t count = std::min({out.size(), step_, bytes_.size() - offset_});
        std::copy_n(bytes_.data() + offset_, count, out.data());
        offset_ += count;
        return count;
    }
    [[nodiscard]] bool exhausted() const { return offset_ == bytes_.size(); }

private:
    std::span<const char> bytes_;
    std::size_t step_;
    std::size_t offset_ = 0;
};

template <class... Ts>
void try_decode(std::span<const char> payload) {
    try {
        (void)decode_values<Ts...>(payload);
    } catch (const DecodeError&) {
    }
}

void decode_payload(const FrameHeader& header, const Bytes& payload) {
    if (header.kind == FrameKind::failure) {
        const auto error = error_from_report(multiworker::TaskId{header.sequence}, payload, 0, 1);
        (void)error.what();
        return;
    }
    switch (header.sequence % 6) {
        case 0:
            try_decode<std::string>(payload);
            break;
        case 1:
            try_decode<std::vector<int>>(payload);
            break;
        case 2:
            try_decode<std::map<std::string, std::vector<double>>>(payload);
            break;
        case 3:
            try_decode<std::pair<std::string, bool>, std::uint64_t>(payload);
            break;
        case 4:
            try_decode<std::vector<std::pair<int, std::string>>, std::vector<std::vector<std::string>>,
                       std::optional<std::set<int>>>(payload);
            break;
        default:
            try_decode<int, double>(payload);
            break;
    }
}

/// Frames straight from a stream, as the parent reads a result ring.
void fuzz_frames(std::span<const char> stream, std::size_t step) {
    ChunkedSource source{stream, step};
    FrameReader reader{1 << 16};
    try {
        while (!source.exhausted()) {
            if (reader.poll(source)) {
                const FrameHeader header = reader.header();
                decode_payload(header, reader.take_payload());
            }
        }
    } catch (const ProtocolError&) {
    }
}

/// The same stream through a real ring whose counters the input also sets.
void fuzz_ring(std::span<const char> stream) {
    if (stream.size() < 16) return;
    alignas(64) static char storage[4096];
    RingCounters counters;
    std::uint64_t head = 0;
    std::uint64_t tail = 0;
    std::memcpy(&head, stream.data(), 8);
    std::memcpy(&tail, stream.data() + 8, 8);
    counters.head.store(head);
    counters.tail.store(tail);
    const auto body = stream.subspan(16);
    std::copy_n(body.data(), std::min(body.size(), sizeof storage), storage);
    ByteRing ring{&counters, storage, sizeof storage};
    FrameReader reader{1 << 16};
    try {
        // As the parent collects: whole small frames in place, the rest reassembled.
        for (int i = 0; i < 64 && reader.poll_ring(ring, large_buffer_bytes - 1); ++i) {
            decode_payload(reader.header(), reader.take_payload());
        }
    } catch (const ProtocolError&) {
    } catch (const RingCorrupted&) {
    }
}

void fuzz_log_records(std::span<const char> stream, std::size_t step) {
    std::vector<char> pending;
    std::size_t offset = 0;
    std::size_t total = 0;
    while (offset < stream.size()) {
        const std::size_t count = std::min(step, stream.size() - offset);
        pending.insert(pending.end(), stream.data() + offset, stream.data() + offset + count);
        offset += count;
        const bool valid = extract_log_records(
            pending, [&total](const LogRecord& record) { total += record.text.size() + record.logger_name.size(); });
        if (!valid) return;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::span<const char> stream{reinterpret_cast<const char*>(data) + 2, size - 2};
    const std::size_t step = 1 + data[1];
    switch (data[0] % 3) {
        case 0:
            fuzz_frames(stream, step);
            break;
        case 1:
            fuzz_ring(stream);
            break;
        default:
            fuzz_log_records(stream, step);
            break;
    }
    return 0;
}
