#pragma once

// What the pipeline tests share: the accounting every run must satisfy, and inputs.

#include <multiworker/multiworker.hpp>

#include <catch2/catch.hpp>

#include <numeric>
#include <vector>

namespace test_support {

/// For every element of a run: each input completed, failed or was never run.
inline void check_accounting(const std::vector<multiworker::StageStats>& stats) {
    for (const auto& element : stats) {
        INFO(element.name);
        CHECK(element.in == element.completed + element.failed + element.unprocessed);
    }
}

/// 0, 1, ..., count - 1.
inline std::vector<int> numbers(int count) {
    std::vector<int> values(static_cast<std::size_t>(count));
    std::iota(values.begin(), values.end(), 0);
    return values;
}

}  // namespace test_support
