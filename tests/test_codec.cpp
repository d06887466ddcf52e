// Encoding of arguments and results: every supported type family round-trips,
// and malformed bytes are rejected with DecodeError instead of read past.

#include <multiworker/detail/codec.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <functional>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

using multiworker::detail::Bytes;
using multiworker::detail::decode_values;
using multiworker::detail::DecodeError;
using multiworker::detail::encode_values;

namespace {

enum class Colour : short { red = 1, green = 7 };

struct Point {
    int x = 0;
    std::string label;
    std::vector<double> weights;
    bool operator==(const Point&) const = default;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& x& label& weights;
    }
};

template <class... Ts>
std::tuple<Ts...> round_trip(const Ts&... values) {
    Bytes bytes;
    encode_values(bytes, values...);
    return decode_values<Ts...>(bytes);
}

}  // namespace

TEST_CASE("arithmetic and enum values are copied bit for bit") {
    Bytes bytes;
    encode_values(bytes, 42, 2.5, Colour::green, std::uint64_t{1} << 60);
    CHECK(bytes.size() == sizeof(int) + sizeof(double) + sizeof(Colour) + sizeof(std::uint64_t));
    const auto [i, d, c, u] = decode_values<int, double, Colour, std::uint64_t>(bytes);
    CHECK(i == 42);
    CHECK(d == 2.5);
    CHECK(c == Colour::green);
    CHECK(u == std::uint64_t{1} << 60);
}

TEST_CASE("standard containers - tuples and user structs round-trip") {
    const std::map<std::string, int> counts{{"a", 1}, {"b", 2}};
    const std::tuple<int, std::string, double> tuple{3, "three", 3.5};
    const Point point{7, "seven", {0.5, 1.5}};
    const std::optional<std::string> maybe{"here"};
    const auto [s, v, m, p, t, pt, o] = round_trip(std::string{"hello"}, std::vector<int>{1, 2, 3}, counts,
                                                   std::pair<std::string, bool>{"x", true}, tuple, point, maybe);
    CHECK(s == "hello");
    CHECK(v == std::vector<int>{1, 2, 3});
    CHECK(m == counts);
    CHECK(p == std::pair<std::string, bool>{"x", true});
    CHECK(t == tuple);
    CHECK(pt == point);
    CHECK(o == maybe);
}

TEST_CASE("an empty value list encodes to nothing") {
    Bytes bytes;
    encode_values(bytes);
    CHECK(bytes.empty());
    CHECK_NOTHROW(decode_values<>(bytes));
}

TEST_CASE("bitwise values of the wrong size are rejected") {
    Bytes bytes;
    encode_values(bytes, 1, 2);
    CHECK_THROWS_AS(decode_values<int>(bytes), DecodeError);
    CHECK_THROWS_AS((decode_values<int, int, int>(bytes)), DecodeError);
}

TEST_CASE("truncated - padded and garbage messages are rejected") {
    // Plain encoding (a string and a vector of numbers) and an archive (a list).
    Bytes plain;
    encode_values(plain, std::string(100, 'x'), std::vector<int>{1, 2, 3});
    Bytes archived;
    encode_values(archived, std::string(100, 'x'), std::list<int>{1, 2, 3});

    SECTION("truncated") {
        for (std::size_t cut = 0; cut < plain.size(); cut += 7) {
            const Bytes prefix(plain.begin(), plain.begin() + static_cast<std::ptrdiff_t>(cut));
            CHECK_THROWS_AS((decode_values<std::string, std::vector<int>>(prefix)), DecodeError);
        }
        for (std::size_t cut = 0; cut < archived.size(); cut += 7) {
            const Bytes prefix(archived.begin(), archived.begin() + static_cast<std::ptrdiff_t>(cut));
            CHECK_THROWS_AS((decode_values<std::string, std::list<int>>(prefix)), DecodeError);
        }
    }
    SECTION("trailing bytes") {
        Bytes padded = plain;
        padded.push_back('!');
        CHECK_THROWS_WITH((decode_values<std::string, std::vector<int>>(padded)), Catch::Contains("trailing"));
        padded = archived;
        padded.push_back('!');
        CHECK_THROWS_WITH((decode_values<std::string, std::list<int>>(padded)), Catch::Contains("trailing"));
    }
    SECTION("a length field claiming more than there is") {
        Bytes corrupt = plain;
        for (std::size_t i = 0; i < 8; ++i) corrupt[i] = static_cast<char>(0x7f);
        CHECK_THROWS_AS((decode_values<std::string, std::vector<int>>(corrupt)), DecodeError);
        corrupt = archived;
        for (std::size_t i = 0; i < 8; ++i) corrupt[i] = static_cast<char>(0x7f);
        CHECK_THROWS_AS((decode_values<std::string, std::list<int>>(corrupt)), DecodeError);
    }
}

TEST_CASE("lengths larger than the message are rejected before anything is allocated") {
    SECTION("a string") {
        Bytes corrupt;
        encode_values(corrupt, std::string(10, 'x'), std::vector<int>{1, 2, 3});
        corrupt[5] = 0x40;  // the string's 8-byte length becomes about 70 TB
        CHECK_THROWS_WITH((decode_values<std::string, std::vector<int>>(corrupt)), Catch::Contains("claimed"));
    }
    SECTION("a vector of numbers") {
        Bytes corrupt;
        encode_values(corrupt, std::string(10, 'x'), std::vector<int>{1, 2, 3});
        corrupt[8 + 10 + 5] = 0x40;  // the vector's element count
        CHECK_THROWS_WITH((decode_values<std::string, std::vector<int>>(corrupt)), Catch::Contains("claimed"));
    }
    SECTION("a collection in an archive") {
        Bytes corrupt;
        encode_values(corrupt, std::string(10, 'x'), std::list<int>{1, 2, 3});
        corrupt[8 + 10 + 5] = 0x40;  // the list's element count
        CHECK_THROWS_WITH((decode_values<std::string, std::list<int>>(corrupt)),
                          Catch::Contains("collection of") && Catch::Contains("claimed"));
    }
}

TEST_CASE("vectors of numbers and strings travel as plain bytes") {
    const std::vector<double> numbers{0.5, -1.25, 1e300};
    const std::vector<char> raw(100'000, 'r');
    Bytes bytes;
    encode_values(bytes, numbers, raw, std::string{"s"});
    CHECK(bytes.size() == 8 + 3 * sizeof(double) + 8 + raw.size() + 8 + 1);
    const auto [n, r, s] = decode_values<std::vector<double>, std::vector<char>, std::string>(bytes);
    CHECK(n == numbers);
    CHECK(r == raw);
    CHECK(s == "s");
    Bytes empty;
    encode_values(empty, std::vector<int>{}, std::string{}, std::vector<char>{});
    CHECK(empty.size() == 3 * 8);
    const auto [ints, text, chars] = decode_values<std::vector<int>, std::string, std::vector<char>>(empty);
    CHECK(ints.empty());
    CHECK(text.empty());
    CHECK(chars.empty());
}

TEST_CASE("vectors of strings - pairs and vectors travel element by element - no archive") {
    using multiworker::detail::plain_codable;
    static_assert(plain_codable<std::vector<std::string>>);
    static_assert(plain_codable<std::vector<std::pair<int, std::string>>>);
    static_assert(plain_codable<std::vector<std::vector<std::string>>>);
    static_assert(!plain_codable<std::vector<bool>>);            // packs bits: the archive
    static_assert(!plain_codable<std::vector<std::tuple<>>>);    // encodes to nothing: no bound
    static_assert(!plain_codable<std::vector<std::list<int>>>);  // a list: the archive
    static_assert(!plain_codable<std::vector<std::pair<const int, int>>>);

    const std::vector<std::string> words{"alpha", "", "a string longer than the in-place fifteen"};
    const std::vector<std::pair<int, std::string>> pairs{{1, "one"}, {-2, "minus two"}};
    const std::vector<std::vector<std::string>> nested{{"a", "b"}, {}, {"c"}};
    Bytes bytes;
    encode_values(bytes, words, pairs, nested);
    // A count, then each element's own encoding: no archive header, no padding.
    const std::size_t word_bytes = 8 + (8 + 5) + 8 + (8 + words[2].size());
    const std::size_t pair_bytes = 8 + (4 + 8 + 3) + (4 + 8 + 9);
    const std::size_t nested_bytes = 8 + (8 + 9 + 9) + 8 + (8 + 9);
    CHECK(bytes.size() == word_bytes + pair_bytes + nested_bytes);
    using Decoded = std::tuple<std::vector<std::string>, std::vector<std::pair<int, std::string>>,
                               std::vector<std::vector<std::string>>>;
    const auto decode = [](const Bytes& in) {
        return decode_values<std::vector<std::string>, std::vector<std::pair<int, std::string>>,
                             std::vector<std::vector<std::string>>>(in);
    };
    CHECK(decode(bytes) == Decoded{words, pairs, nested});

    // Every cut is rejected, never read past.
    for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
        const Bytes prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut));
        CHECK_THROWS_AS(decode(prefix), DecodeError);
    }
    // A count the rest of the message cannot hold is refused before anything is allocated.
    Bytes lying = bytes;
    lying[5] = 0x40;  // the words' count becomes about 70 T
    CHECK_THROWS_WITH(decode(lying), Catch::Contains("claimed"));
    Bytes lying_inside = bytes;
    lying_inside[8 + 5] = 0x40;  // the first word's length
    CHECK_THROWS_WITH(decode(lying_inside), Catch::Contains("claimed"));
    // Trailing bytes.
    Bytes padded = bytes;
    padded.push_back('x');
    CHECK_THROWS_AS(decode(padded), DecodeError);
}

TEST_CASE("maps - sets and optionals of plain values travel without the archive") {
    using multiworker::detail::plain_codable;
    static_assert(plain_codable<std::map<std::string, int>>);
    static_assert(plain_codable<std::unordered_map<int, std::vector<std::string>>>);
    static_assert(plain_codable<std::set<std::string>>);
    static_assert(plain_codable<std::unordered_set<long>>);
    static_assert(plain_codable<std::optional<std::vector<int>>>);
    static_assert(!plain_codable<std::map<std::string, Point>>);           // a user struct: the archive
    static_assert(!plain_codable<std::map<int, int, std::greater<int>>>);  // its own order: the archive
    static_assert(!plain_codable<std::list<int>>);
    static_assert(!plain_codable<std::optional<Point>>);

    using Counts = std::map<std::string, int>;
    using Index = std::unordered_map<int, std::vector<std::string>>;
    using Maybe = std::optional<std::string>;
    const Counts counts{{"a", 1}, {"bc", 2}};
    const Index index{{3, {"x", "y"}}, {4, {}}};
    const std::set<std::string> names{"ann", "bob"};
    const std::unordered_set<long> ids{5, -6};
    Bytes bytes;
    encode_values(bytes, counts, index, names, ids, Maybe{"here"}, Maybe{});
    const std::size_t count_bytes = 8 + (8 + 1 + 4) + (8 + 2 + 4);
    const std::size_t index_bytes = 8 + (4 + 8 + 9 + 9) + (4 + 8);
    const std::size_t name_bytes = 8 + (8 + 3) * 2;
    const std::size_t id_bytes = 8 + 8 * 2;
    const std::size_t maybe_bytes = (1 + 8 + 4) + 1;  // a presence byte, then the value if present
    CHECK(bytes.size() == count_bytes + index_bytes + name_bytes + id_bytes + maybe_bytes);
    using Decoded = std::tuple<Counts, Index, std::set<std::string>, std::unordered_set<long>, Maybe, Maybe>;
    const auto decode = [](const Bytes& in) {
        return decode_values<Counts, Index, std::set<std::string>, std::unordered_set<long>, Maybe, Maybe>(in);
    };
    CHECK(decode(bytes) == Decoded{counts, index, names, ids, Maybe{"here"}, Maybe{}});

    for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
        const Bytes prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut));
        CHECK_THROWS_AS(decode(prefix), DecodeError);
    }
    Bytes lying = bytes;
    lying[5] = 0x40;  // the map's count
    CHECK_THROWS_WITH(decode(lying), Catch::Contains("claimed"));
    Bytes bad_presence = bytes;
    bad_presence[bytes.size() - 1] = 2;  // the empty optional's presence byte
    CHECK_THROWS_WITH(decode(bad_presence), Catch::Contains("invalid bool"));
}

TEST_CASE("a bool that is neither 0 nor 1 is rejected") {
    Bytes bytes;
    encode_values(bytes, true, 7);
    bytes[0] = 2;
    CHECK_THROWS_AS((decode_values<bool, int>(bytes)), DecodeError);
    Bytes archived;
    encode_values(archived, std::string{"x"}, true);
    archived.back() = 5;
    CHECK_THROWS_AS((decode_values<std::string, bool>(archived)), DecodeError);
}

TEST_CASE("strings and numbers alone skip the archive and still reject lies") {
    Bytes bytes;
    encode_values(bytes, std::string{"marilyn"}, 1954, std::string{});
    CHECK(bytes.size() == 8 + 7 + sizeof(int) + 8);  // lengths, bytes and the int: no archive header
    const auto [name, year, empty] = decode_values<std::string, int, std::string>(bytes);
    CHECK(name == "marilyn");
    CHECK(year == 1954);
    CHECK(empty.empty());

    Bytes lying = bytes;
    lying[0] = 100;  // the first string claims 100 bytes
    CHECK_THROWS_WITH((decode_values<std::string, int, std::string>(lying)), Catch::Contains("claimed"));
    const Bytes truncated(bytes.begin(), bytes.end() - 3);
    CHECK_THROWS_AS((decode_values<std::string, int, std::string>(truncated)), DecodeError);
}

TEST_CASE("pairs and tuples of plain values skip the archive - element by element") {
    const std::pair<long, std::size_t> pair{-3, 9};
    using Nested = std::tuple<int, std::string, std::pair<bool, double>>;
    const Nested nested{4, "four", {true, 0.25}};
    Bytes bytes;
    encode_values(bytes, pair, nested);
    // No archive header and no padding: 8 + 8, then 4 + (8 + 4) + (1 + 8).
    CHECK(bytes.size() == 16 + 4 + 12 + 9);
    const auto [p, n] = decode_values<std::pair<long, std::size_t>, Nested>(bytes);
    CHECK(p == pair);
    CHECK(n == nested);

    Bytes lying = bytes;
    lying[20] = 100;  // the string in the tuple claims 100 bytes
    CHECK_THROWS_WITH((decode_values<std::pair<long, std::size_t>, Nested>(lying)), Catch::Contains("claimed"));
    Bytes bad_bool = bytes;
    bad_bool[32] = 2;  // the bool in the innermost pair
    CHECK_THROWS_AS((decode_values<std::pair<long, std::size_t>, Nested>(bad_bool)), DecodeError);
    const Bytes truncated(bytes.begin(), bytes.end() - 1);
    CHECK_THROWS_AS((decode_values<std::pair<long, std::size_t>, Nested>(truncated)), DecodeError);
    CHECK_THROWS_AS((decode_values<std::pair<long, long>>(bytes)), DecodeError);  // trailing bytes
}

TEST_CASE("arrays of numbers and vectors of them travel as their bytes - arrays of bool through the archive") {
    using multiworker::detail::plain_codable;
    static_assert(plain_codable<std::array<char, 16>>);
    static_assert(plain_codable<std::pair<int, std::array<double, 3>>>);
    static_assert(!plain_codable<std::array<bool, 3>>);         // each byte would need a check
    static_assert(!plain_codable<std::array<std::string, 2>>);  // not bitwise

    std::array<char, 16> key{};
    for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<char>('a' + i);
    const std::pair<int, std::array<double, 3>> point{7, {0.5, -1.0, 2.25}};
    Bytes bytes;
    encode_values(bytes, key, point);
    CHECK(bytes.size() == 16 + 4 + 24);  // no counts, no padding
    const auto [k, p] = decode_values<std::array<char, 16>, std::pair<int, std::array<double, 3>>>(bytes);
    CHECK(k == key);
    CHECK(p == point);

    const Bytes truncated(bytes.begin(), bytes.end() - 1);
    CHECK_THROWS_AS((decode_values<std::array<char, 16>, std::pair<int, std::array<double, 3>>>(truncated)),
                    DecodeError);
    CHECK_THROWS_AS((decode_values<std::array<char, 8>>(bytes)), DecodeError);  // trailing bytes

    const std::vector<std::array<float, 3>> cloud{{1.f, 2.f, 3.f}, {-4.f, 0.5f, 6.f}};
    static_assert(multiworker::detail::is_plain_buffer<std::vector<std::array<float, 3>>>);
    Bytes points;
    encode_values(points, cloud);
    CHECK(points.size() == 8 + 2 * 12);  // a count, then the elements' bytes
    CHECK(std::get<0>(decode_values<std::vector<std::array<float, 3>>>(points)) == cloud);
    Bytes lying = points;
    lying[0] = 3;  // three points claimed, two sent
    CHECK_THROWS_WITH((decode_values<std::vector<std::array<float, 3>>>(lying)), Catch::Contains("claimed"));

    const std::array<bool, 3> flags{true, false, true};
    Bytes archived;
    encode_values(archived, flags);
    CHECK(std::get<0>(decode_values<std::array<bool, 3>>(archived)) == flags);
}

TEST_CASE("a large plain result is borrowed - its encoding unchanged") {
    using multiworker::detail::encode_borrowing;
    using multiworker::detail::large_buffer_bytes;
    const auto encoded = [](const auto& value) {
        Bytes bytes;
        encode_values(bytes, value);
        return std::vector<char>(bytes.begin(), bytes.end());
    };
    const auto borrowed = [](const auto& value, std::span<const char>& body) {
        Bytes head;
        body = encode_borrowing(head, value);
        // Sized once, then filled: GCC 12 at -O3 reports a false -Warray-bounds for
        // vector<char>(head) followed by insert(end, body) (GCC bug 107852).
        std::vector<char> joined(head.size() + body.size());
        std::copy(head.begin(), head.end(), joined.begin());
        std::copy(body.begin(), body.end(), joined.begin() + static_cast<std::ptrdiff_t>(head.size()));
        return joined;
    };
    std::span<const char> body;

    const std::string large(large_buffer_bytes, 'L');
    CHECK(borrowed(large, body) == encoded(large));
    CHECK(body.data() == large.data());  // the value's own bytes, not a copy
    CHECK(body.size() == large.size());

    const std::vector<double> numbers(large_buffer_bytes / sizeof(double) + 3, 2.5);
    CHECK(borrowed(numbers, body) == encoded(numbers));
    CHECK(body.data() == reinterpret_cast<const char*>(numbers.data()));

    const std::string small(large_buffer_bytes - 1, 's');
    CHECK(borrowed(small, body) == encoded(small));
    CHECK(body.empty());  // copied into the head

    const std::map<int, std::string> archived{{1, std::string(large_buffer_bytes, 'm')}};
    CHECK(borrowed(archived, body) == encoded(archived));
    CHECK(body.empty());
}
