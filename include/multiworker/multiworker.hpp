#pragma once

/// @file
/// Everything multiworker offers, in one include.

#include <multiworker/error.hpp>
#include <multiworker/options.hpp>
#include <multiworker/pipeline.hpp>
#include <multiworker/processor.hpp>
#include <multiworker/progress.hpp>
#include <multiworker/result.hpp>
#include <multiworker/serialization.hpp>
#include <multiworker/task_id.hpp>
#include <multiworker/version.hpp>
