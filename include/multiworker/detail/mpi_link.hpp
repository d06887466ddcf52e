#pragma once

// One rank's end of Backend::mpi's messages: MPI_COMM_WORLD driven by a
// single thread, sends and receives that never block (a peer that died must
// not stall the rank that talks to it), and "when did I last hear from rank r".
//
// Why never block: Open MPI 4.1 has no fault tolerance interface, and a
// blocking send or receive with a dead peer can wait forever. Run with
// `mpirun --enable-recovery`, the survivors of a lost rank keep running as
// long as they do not wait on it; heartbeats (below) tell that it is gone.
// A large message takes a while to cross, and it crosses only while both
// ends call into MPI: the thread keeps polling (and sending heartbeats)
// meanwhile, instead of sitting in one MPI_Recv that no heartbeat passes.

#include <multiworker/detail/mpi_pacing.hpp>
#include <multiworker/detail/mpi_wire.hpp>

#include <mpi.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <list>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace multiworker::detail {

/// One rank's end of Backend::mpi's messages (see the top of this file).
class MpiLink {
public:
    using Clock = std::chrono::steady_clock;

    /// A message received.
    struct Message {
        int source;
        int tag;
        std::vector<char> body;
    };

    /// Initializes MPI in the calling thread, which alone uses the link.
    /// MPI_ERRORS_RETURN: a failed call is reported here, not by aborting the job.
    MpiLink() {
        ignore_broken_connections();
        int initialized = 0;
        MPI_Initialized(&initialized);
        if (initialized != 0) {
            throw std::logic_error{
                "multiworker: Backend::mpi initializes MPI itself, once per program: MPI was already initialized"};
        }
        int provided = 0;
        MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
        MPI_Comm_size(MPI_COMM_WORLD, &size_);
        const auto ranks = static_cast<std::size_t>(size_);
        listened_at_ = Clock::now();
        last_heard_.assign(ranks, listened_at_);
        lost_.assign(ranks, 0);
        assembling_.assign(ranks, incoming_.end());
        waits_in_pass_.assign(ranks, 0);
        char name[MPI_MAX_PROCESSOR_NAME] = {};
        int length = 0;
        MPI_Get_processor_name(name, &length);
        host_.assign(name, static_cast<std::size_t>(length));
    }

    MpiLink(const MpiLink&) = delete;
    MpiLink& operator=(const MpiLink&) = delete;

    /// Ends MPI: with MPI_Finalize when every rank is known to be alive
    /// (it synchronises the whole job, so it would wait forever for a lost
    /// one), and not at all otherwise.
    void finish(bool every_rank_alive) {
        if (every_rank_alive) {
            wait_for_transfers(std::chrono::seconds{10});
            MPI_Finalize();
        }
    }

    [[nodiscard]] int rank() const noexcept { return rank_; }
    [[nodiscard]] int size() const noexcept { return size_; }
    [[nodiscard]] const std::string& host() const noexcept { return host_; }

    /// Queues a message to `destination`, after those queued before it; it
    /// crosses while receive() is called.
    void send(int destination, mpi_wire::Tag tag, std::vector<char> body = {}) {
        outgoing_.push_back(Outgoing{destination, tag, std::move(body)});
        pump_sends();
    }

    /// An empty heartbeat to `destination`, ahead of any large message still
    /// crossing to it: its pieces leave room for it.
    void beat(int destination) {
        Outgoing& out = outgoing_.emplace_back(Outgoing{destination, mpi_wire::heartbeat, {}});
        hand(out);
    }

    /// The next message that has arrived whole, if any; never waits. A
    /// rank's messages, but for heartbeats, come in the order it sent them.
    std::optional<Message> receive() {
        pump_sends();
        if (auto message = take_arrived()) return message;
        while (std::optional<Arrival> arrival = probe()) {
            if (arrival->tag == mpi_wire::large) {
                start_large(*arrival);
            } else if (arrival->tag == mpi_wire::piece) {
                receive_piece(*arrival);
            } else if (auto message = receive_at_once(*arrival)) {
                return message;
            }
        }
        listened_at_ = Clock::now();
        return take_arrived();
    }

    /// A message is still crossing, one way or the other: poll again soon.
    [[nodiscard]] bool transferring() const noexcept {
        const auto under_way = [](const auto& transfer) { return !transfer.abandoned; };
        return std::any_of(outgoing_.begin(), outgoing_.end(), under_way) ||
               std::any_of(incoming_.begin(), incoming_.end(), under_way);
    }

    /// How long this rank listened, up to the last receive() that found
    /// nothing more, since the last message or piece from `rank` (or since
    /// MPI_Init). Time this rank spent elsewhere (copying a large message, or
    /// waiting for a core) is not the peer's silence.
    [[nodiscard]] Clock::duration silence_of(int rank) const {
        return std::max(Clock::duration{0}, listened_at_ - last_heard_[static_cast<std::size_t>(rank)]);
    }

    /// Forgets the sends to and receives from `rank`, which is gone: they
    /// would never complete. Their buffers stay allocated until the end.
    void abandon(int rank) {
        for (auto& out : outgoing_) {
            if (out.destination == rank) out.abandoned = true;
        }
        for (auto& in : incoming_) {
            if (in.source == rank) in.abandoned = true;
        }
        lost_[static_cast<std::size_t>(rank)] = 1;
    }

private:
    // A message crosses in pieces no larger than this, and at most
    // `pieces_in_flight` of one message are given to MPI at a time. Open
    // MPI's TCP transport sends a message in one stream: a heartbeat sent
    // after 64 MiB would wait behind all of it, over a slow link for longer
    // than heartbeat_limit; now it waits behind 512 KiB at most, and what the
    // socket holds. Pieces stay under the TCP eager limit (64 KiB), so they
    // take no handshake: when a peer dies during a handshaked send, Open MPI
    // 4.1 deadlocks in its error path (the completion sends a FIN on the
    // connection whose lock it holds). A failed eager send aborts the
    // process instead (docs/backends.md): an end, not a hang.
    static constexpr std::size_t piece_bytes = std::size_t{32} << 10;
    static constexpr std::size_t pieces_in_flight = 16;
    // Messages up to this size arrive with their envelope over every
    // transport (Open MPI's smallest eager limit, shared memory's, is 4 KiB).
    static constexpr std::size_t whole_with_envelope_bytes = 1024;

    struct Outgoing {
        int destination;
        int tag;
        std::vector<char> body;  // must stay where it is until every piece is sent
        std::vector<char> header{};
        std::size_t handed = 0;  // bytes given to MPI
        bool started = false;
        bool abandoned = false;
        std::vector<MPI_Request> in_flight{};

        [[nodiscard]] bool all_handed() const noexcept { return started && handed == body.size(); }
    };

    struct Incoming {
        int source;
        int tag;
        std::vector<char> body;  // must stay where it is until every piece is received
        std::size_t posted = 0;  // bytes a receive was started for
        bool abandoned = false;
        std::vector<MPI_Request> pieces{};
    };

    /// A write to the socket of a rank that died raises SIGPIPE, whose
    /// default action would end this process: the user's, on rank 0. It is
    /// blocked in this thread, the only one that writes to MPI's sockets
    /// (threads MPI_Init starts inherit the mask), and the write fails with
    /// EPIPE instead, which Open MPI handles. The rest of the process keeps
    /// its own handling.
    static void ignore_broken_connections() {
        sigset_t broken_pipe;
        sigemptyset(&broken_pipe);
        sigaddset(&broken_pipe, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &broken_pipe, nullptr);
    }

    /// True once every request has completed (they become MPI_REQUEST_NULL).
    static bool completed(std::vector<MPI_Request>& requests) {
        int done = 0;
        MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
        if (done != 0) requests.clear();
        return done != 0;
    }

    // ----- sending -----

    /// Hands on each destination's first message not yet all handed, drops
    /// what has left; messages after it to the same destination wait.
    void pump_sends() {
        ++pass_;
        for (auto it = outgoing_.begin(); it != outgoing_.end();) {
            Outgoing& out = *it;
            if (out.abandoned) {
                ++it;
                continue;
            }
            auto& waits = waits_in_pass_[static_cast<std::size_t>(out.destination)];
            if (!out.all_handed() && waits != pass_) hand(out);
            if (!out.all_handed()) waits = pass_;
            it = out.all_handed() && completed(out.in_flight) ? outgoing_.erase(it) : std::next(it);
        }
    }

    /// Gives MPI as much of `out` as its window allows.
    void hand(Outgoing& out) {
        const std::size_t size = out.body.size();
        if (!out.started) {
            out.started = true;
            if (size <= piece_bytes) {
                isend(out, out.body.data(), size, out.tag);
                out.handed = size;
                return;
            }
            mpi_wire::Writer header;
            header.number(static_cast<std::int32_t>(out.tag));
            header.number(static_cast<std::uint64_t>(size));
            out.header = header.take();
            isend(out, out.header.data(), out.header.size(), mpi_wire::large);
        }
        std::erase_if(out.in_flight, [](MPI_Request& request) {
            int done = 0;
            MPI_Test(&request, &done, MPI_STATUS_IGNORE);
            return done != 0;
        });
        while (out.handed < size && out.in_flight.size() < pieces_in_flight) {
            const std::size_t piece = std::min(piece_bytes, size - out.handed);
            isend(out, out.body.data() + out.handed, piece, mpi_wire::piece);
            out.handed += piece;
        }
    }

    static void isend(Outgoing& out, const char* bytes, std::size_t count, int tag) {
        MPI_Request& request = out.in_flight.emplace_back(MPI_REQUEST_NULL);
        MPI_Isend(bytes, static_cast<int>(count), MPI_BYTE, out.destination, tag, MPI_COMM_WORLD, &request);
    }

    // ----- receiving -----

    /// A message, or a piece of one, whose envelope has arrived: matched, so
    /// no other receive can take it.
    struct Arrival {
        MPI_Message handle;
        int source;
        int tag;
        int count;
    };

    /// The next arrival, if any. Its sender is heard from now.
    std::optional<Arrival> probe() {
        int arrived = 0;
        Arrival arrival{MPI_MESSAGE_NULL, 0, 0, 0};
        MPI_Status status;
        MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &arrived, &arrival.handle, &status);
        if (arrived == 0) return std::nullopt;
        arrival.source = status.MPI_SOURCE;
        arrival.tag = status.MPI_TAG;
        MPI_Get_count(&status, MPI_BYTE, &arrival.count);
        last_heard_[static_cast<std::size_t>(arrival.source)] = Clock::now();
        return arrival;
    }

    /// A small message is here whole when its envelope is (every transport
    /// sends this much with the envelope): it is received on the spot, and
    /// returned unless it must wait for an earlier one from its source or
    /// its source is lost. A larger one starts being received.
    std::optional<Message> receive_at_once(Arrival& arrival) {
        const auto source = static_cast<std::size_t>(arrival.source);
        Incoming& in = incoming_.emplace_back(
            Incoming{arrival.source, arrival.tag, std::vector<char>(static_cast<std::size_t>(arrival.count))});
        in.abandoned = lost_[source] != 0;
        if (static_cast<std::size_t>(arrival.count) > whole_with_envelope_bytes) {
            post_receive(in, arrival);
            return std::nullopt;
        }
        MPI_Mrecv(in.body.data(), arrival.count, MPI_BYTE, &arrival.handle, MPI_STATUS_IGNORE);
        in.posted = in.body.size();
        if (in.abandoned || std::prev(incoming_.end()) != first_from(arrival.source)) return std::nullopt;
        Message message{in.source, in.tag, std::move(in.body)};
        incoming_.pop_back();
        return message;
    }

    /// A large message's header: small, so here whole, and received at once.
    void start_large(Arrival& arrival) {
        std::vector<char> header(static_cast<std::size_t>(arrival.count));
        MPI_Mrecv(header.data(), arrival.count, MPI_BYTE, &arrival.handle, MPI_STATUS_IGNORE);
        mpi_wire::Reader fields{header};
        const auto tag = fields.number<std::int32_t>();
        const auto size = fields.number<std::uint64_t>();
        const auto source = static_cast<std::size_t>(arrival.source);
        Incoming& in = incoming_.emplace_back(Incoming{arrival.source, tag, std::vector<char>(size)});
        in.abandoned = lost_[source] != 0;
        assembling_[source] = std::prev(incoming_.end());
    }

    /// A piece goes straight to its place in the large message it belongs to.
    void receive_piece(Arrival& arrival) {
        const auto source = static_cast<std::size_t>(arrival.source);
        if (assembling_[source] == incoming_.end()) {  // a stray piece: received, and dropped
            Incoming& stray = incoming_.emplace_back(
                Incoming{arrival.source, arrival.tag, std::vector<char>(static_cast<std::size_t>(arrival.count))});
            stray.abandoned = true;
            post_receive(stray, arrival);
            return;
        }
        Incoming& large = *assembling_[source];
        post_receive(large, arrival);
        if (large.posted == large.body.size()) assembling_[source] = incoming_.end();
    }

    void post_receive(Incoming& in, Arrival& arrival) {
        const auto bytes = static_cast<std::size_t>(arrival.count);
        if (in.posted + bytes > in.body.size())
            throw std::runtime_error{"multiworker: an MPI message overran its size"};
        MPI_Request& request = in.pieces.emplace_back(MPI_REQUEST_NULL);
        MPI_Imrecv(in.body.data() + in.posted, arrival.count, MPI_BYTE, &arrival.handle, &request);
        in.posted += bytes;
    }

    /// The oldest message from `source` not yet delivered.
    std::list<Incoming>::iterator first_from(int source) {
        return std::find_if(incoming_.begin(), incoming_.end(),
                            [source](const Incoming& in) { return in.source == source && !in.abandoned; });
    }

    /// The first message received whole whose source has no earlier one
    /// still crossing. What a lost rank sent is dropped once received.
    std::optional<Message> take_arrived() {
        if (incoming_.empty()) return std::nullopt;
        ++pass_;
        for (auto it = incoming_.begin(); it != incoming_.end();) {
            const bool whole = it->posted == it->body.size() && completed(it->pieces);
            auto& waits = waits_in_pass_[static_cast<std::size_t>(it->source)];
            if (whole && it->abandoned) {
                it = incoming_.erase(it);
            } else if (whole && waits != pass_) {
                Message message{it->source, it->tag, std::move(it->body)};
                incoming_.erase(it);
                return message;
            } else {
                if (!it->abandoned) waits = pass_;  // what follows from this source waits for it
                ++it;
            }
        }
        return std::nullopt;
    }

    /// Until every transfer not abandoned has completed (MPI_Finalize must
    /// find none pending), or `limit`. What arrives now is dropped: the
    /// conversation is over.
    void wait_for_transfers(Clock::duration limit) {
        const auto deadline = Clock::now() + limit;
        while (transferring() && Clock::now() < deadline) {
            (void)receive();
            std::erase_if(incoming_, [](Incoming& in) {
                return !in.abandoned && in.posted == in.body.size() && completed(in.pieces);
            });
        }
    }

    int rank_ = 0;
    int size_ = 1;
    std::string host_;
    std::list<Outgoing> outgoing_;  // lists: a buffer MPI holds must not move
    std::list<Incoming> incoming_;  // in the order their first envelope was matched
    std::vector<Clock::time_point> last_heard_;
    Clock::time_point listened_at_;  // see silence_of()
    // Per rank:
    std::vector<char> lost_;                                 // abandon()ed
    std::vector<std::list<Incoming>::iterator> assembling_;  // the large message its pieces go to
    std::vector<unsigned> waits_in_pass_;  // the pump or take pass that met an earlier message of its unfinished
    unsigned pass_ = 0;
};

}  // namespace multiworker::detail
