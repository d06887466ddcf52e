#pragma once

/// @file
/// Everything multiworker offers, in one include.

#include <multiworker/context.hpp>
#include <multiworker/error.hpp>
#include <multiworker/logger.hpp>
#include <multiworker/message.hpp>
#include <multiworker/options.hpp>
#include <multiworker/pipeline.hpp>
#include <multiworker/process_id.hpp>
#include <multiworker/processor.hpp>
#include <multiworker/progress.hpp>
#include <multiworker/result.hpp>
#include <multiworker/serialization.hpp>
#include <multiworker/supervisor.hpp>
#include <multiworker/supervisor_error.hpp>
#include <multiworker/supervisor_options.hpp>
#include <multiworker/task_id.hpp>
#include <multiworker/version.hpp>
