#pragma once

/// @file
/// The library's version, as numbers and as a string.

#include <string_view>

/// Major version of these headers, as a number for preprocessor checks.
#define MULTIWORKER_VERSION_MAJOR 0
/// Minor version of these headers.
#define MULTIWORKER_VERSION_MINOR 1
/// Patch version of these headers.
#define MULTIWORKER_VERSION_PATCH 0

namespace multiworker {

/// The version of these headers, e.g. "0.1.0".
[[nodiscard]] constexpr std::string_view version_string() noexcept {
    return "0.1.0";
}

}  // namespace multiworker
