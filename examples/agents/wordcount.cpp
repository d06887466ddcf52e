// A realistic program in the guide's model: a word count by map and reduce, with a progress
// display. It writes 24 text files (deterministic: words from a fixed list, picked by a linear
// congruential generator) into a fresh temporary directory, then runs
//
//   mapper x 3  --PartialCounts, Done-->  reducer  --Summary-->  parent
//        \--FileDone to listeners-->  progress (a resident Logger<FileDone>)
//
// Mapper i counts files i, i + 3, ... and sends the counts of each file to the reducer, and a
// FileDone to whoever listens; once its files are done it tells the reducer so. The reducer knows
// how many mappers there are (ctx.ids("mapper").size()), merges until each has said Done, and sends
// the parent the merged counts and the top 10. The parent counts the same files serially, prints
// the top 10 and the total, and "match" if both counts agree (it exits 1 otherwise). The directory
// is removed at the end, whatever happens.
//
// Prints: 24 progress lines "progress: k/24 files (p%)", the top 10, the total, "match".

#include "common.hpp"

#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

namespace agents {

using Counts = std::map<std::string, std::uint64_t>;
using Ranking = std::vector<std::pair<std::string, std::uint64_t>>;

// ----- the corpus

inline constexpr unsigned file_count = 24;
inline constexpr unsigned mapper_count = 3;

inline constexpr const char* vocabulary[] = {
    "the", "of",   "and", "to",   "in",    "a",   "is",  "that", "for",  "it",  "as",    "was",  "with", "be",
    "by",  "on",   "not", "he",   "this",  "are", "or",  "his",  "from", "at",  "which", "but",  "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we",   "can",  "her", "has",   "there"};
inline constexpr std::uint32_t vocabulary_size = std::size(vocabulary);

/// The classic rand() generator: 15 bits at a time, the same sequence everywhere.
class Lcg {
public:
    explicit Lcg(std::uint32_t seed) : state_{seed} {}
    std::uint32_t next() {
        state_ = state_ * 1103515245u + 12345u;
        return (state_ >> 16) & 0x7fffu;
    }

private:
    std::uint32_t state_;
};

/// The text of file `index`: 40 to 79 sentences of 4 to 15 words, each capitalized and ended by a
/// full stop, with a comma now and then. Earlier words of the list are likelier (the smaller of
/// two picks), so the counts differ.
inline std::string text_of(unsigned index) {
    Lcg random{index * 7919u + 17u};
    std::string text;
    const std::uint32_t sentences = 40 + random.next() % 40;
    for (std::uint32_t s = 0; s < sentences; ++s) {
        const std::uint32_t words = 4 + random.next() % 12;
        for (std::uint32_t w = 0; w < words; ++w) {
            const std::uint32_t first = random.next() % vocabulary_size;  // two statements: a fixed order
            const std::uint32_t second = random.next() % vocabulary_size;
            const std::uint32_t pick = std::min(first, second);
            std::string word = vocabulary[pick];
            if (w == 0) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
            text += word;
            if (w + 1 == words) {
                text += ".\n";
            } else {
                text += random.next() % 9 == 0 ? ", " : " ";
            }
        }
    }
    return text;
}

/// Adds the words of `text` to `counts`: runs of letters, lowercased.
inline void count_words(std::string_view text, Counts& counts) {
    std::string word;
    for (const char c : text) {
        if (std::isalpha(static_cast<unsigned char>(c))) {
            word += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        } else if (!word.empty()) {
            ++counts[word];
            word.clear();
        }
    }
    if (!word.empty()) ++counts[word];
}

inline std::string read_file(const std::string& path) {
    std::ifstream in{path, std::ios::binary};
    if (!in) throw std::runtime_error{"cannot read " + path};
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

inline std::uint64_t total_of(const Counts& counts) {
    std::uint64_t total = 0;
    for (const auto& [word, n] : counts) total += n;
    return total;
}

/// The `n` most frequent words, the most frequent first (ties: alphabetical).
inline Ranking top(const Counts& counts, std::size_t n) {
    Ranking ranking(counts.begin(), counts.end());
    std::sort(ranking.begin(), ranking.end(), [](const auto& a, const auto& b) {
        return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    if (ranking.size() > n) ranking.resize(n);
    return ranking;
}

/// A directory made by mkdtemp() under $TMPDIR (or /tmp), removed with its files on destruction.
class TemporaryDirectory {
public:
    TemporaryDirectory() {
        const char* base = std::getenv("TMPDIR");
        std::string pattern =
            std::string{base != nullptr && *base != '\0' ? base : "/tmp"} + "/agents-wordcount-XXXXXX";
        if (::mkdtemp(pattern.data()) == nullptr)
            throw std::system_error{errno, std::generic_category(), "mkdtemp " + pattern};
        path_ = pattern;
    }
    ~TemporaryDirectory() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    TemporaryDirectory(const TemporaryDirectory&) = delete;
    TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;

    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

private:
    std::filesystem::path path_;
};

// ----- the messages

/// A mapper's counts of one file, for the reducer.
struct PartialCounts {
    std::string file;
    Counts counts;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& file& counts;
    }
};

/// A mapper has sent the counts of all its files.
struct Done {
    unsigned files = 0;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& files;
    }
};

/// A file is counted: for whoever listens (the progress logger).
struct FileDone {
    std::string file;
    std::uint64_t words = 0;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& file& words;
    }
};

/// The reducer's result, for the parent.
struct Summary {
    Counts counts;
    Ranking top;
    std::uint64_t total = 0;
    unsigned files = 0;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& counts& top& total& files;
    }
};

// ----- the processes

struct Mapper {
    std::vector<std::string> files;  // every file: a mapper takes its share by its index

    void run(multiworker::Context& ctx) {
        const std::size_t mappers = ctx.ids("mapper").size();
        const multiworker::ProcessId reducer = ctx.ids("reducer").front();
        unsigned mine = 0;
        for (std::size_t f = ctx.self().index; f < files.size(); f += mappers) {
            PartialCounts partial{files[f], {}};
            count_words(read_file(files[f]), partial.counts);
            const std::uint64_t words = total_of(partial.counts);
            ctx.send(reducer, partial);
            ctx.send(multiworker::listeners, FileDone{files[f], words});
            ++mine;
        }
        ctx.send(reducer, Done{mine});
    }
};

struct Reducer {
    void run(multiworker::Context& ctx) {
        const std::size_t mappers = ctx.ids("mapper").size();
        Summary summary;
        std::size_t done = 0;
        while (done < mappers) {  // a mapper's Done comes after all its counts: one sender keeps its order
            auto message = ctx.receive<PartialCounts, Done>();
            if (auto* partial = std::get_if<PartialCounts>(&message)) {
                for (const auto& [word, n] : partial->counts) summary.counts[word] += n;
            } else {
                summary.files += std::get<Done>(message).files;
                ++done;
            }
        }
        summary.total = total_of(summary.counts);
        summary.top = top(summary.counts, 10);
        ctx.send(multiworker::parent, summary);
    }
};

}  // namespace agents

int main(int argc, char** argv) {
    return agents::guarded_main([&] {
        const agents::CommandLine line = agents::parse_command_line(argc, argv);
        const agents::TemporaryDirectory directory;
        std::vector<std::string> files;
        for (unsigned i = 0; i < agents::file_count; ++i) {
            char name[32];
            std::snprintf(name, sizeof name, "text-%02u.txt", i);
            files.push_back((directory.path() / name).string());
            std::ofstream out{files.back(), std::ios::binary};
            out << agents::text_of(i);
            if (!out.flush()) throw std::runtime_error{"cannot write " + files.back()};
        }

        multiworker::Supervisor sup{agents::supervisor_options(line)};
        sup.add("mapper", agents::Mapper{files}, {.copies = agents::mapper_count});
        sup.add("reducer", agents::Reducer{});
        sup.add("progress", multiworker::Logger<agents::FileDone>{
                                [done = 0u](const std::variant<agents::FileDone>&, multiworker::ProcessId) mutable {
                                    ++done;
                                    std::printf("progress: %u/%u files (%u%%)\n", done, agents::file_count,
                                                done * 100 / agents::file_count);
                                }});
        std::vector<agents::Summary> summaries;
        sup.on<agents::Summary>([&](const agents::Summary& s) { summaries.push_back(s); });
        sup.run();
        if (summaries.size() != 1) throw std::runtime_error{"expected one summary from the reducer"};
        const agents::Summary& summary = summaries.front();

        agents::Counts serial;
        for (const std::string& file : files) agents::count_words(agents::read_file(file), serial);

        std::printf("top 10 words:\n");
        for (const auto& [word, n] : summary.top)
            std::printf("%8llu  %s\n", static_cast<unsigned long long>(n), word.c_str());
        std::printf("total words: %llu in %u files (%zu distinct)\n", static_cast<unsigned long long>(summary.total),
                    summary.files, summary.counts.size());
        const bool match = summary.counts == serial && summary.total == agents::total_of(serial) &&
                           summary.top == agents::top(serial, 10) && summary.files == agents::file_count;
        std::printf("%s\n", match ? "match" : "MISMATCH: the serial count differs");
        return match ? 0 : 1;
    });
}
