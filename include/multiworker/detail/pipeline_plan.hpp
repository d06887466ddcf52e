#pragma once

// A pipeline as its engines see it: one ElementPlan per element, all types
// erased. The typed elements (pipeline_elements.hpp) make their plans; the
// engines (forked_pipeline.hpp, inprocess_pipeline.hpp) run them and report
// a RunReport. Items travel between elements as their encoding, the one
// encode_values() gives a single value: an output's bytes are exactly the
// next element's argument bytes, so the parent routes items without
// decoding or encoding them.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/task_dispatcher.hpp>
#include <multiworker/pipeline_options.hpp>
#include <multiworker/pipeline_result.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace multiworker::detail {

enum class ElementKind {
    source_process,  // `void read(Emit<U>&)`, run once in a process of its own
    source_range,    // a range iterated in the parent
    stage,           // a method run by `workers` processes, one item at a time
    sink,            // `add` for every item in one process, then `finish`
};

struct ElementPlan {
    ElementKind kind = ElementKind::stage;
    std::string name;
    StageOptions options;
    ItemMode items = ItemMode::none;         // how its method's outputs leave it
    TaskRunner runner;                       // one item (a source: its one run)
    WorkerHooks hooks;                       // on_worker_start/exit; a sink's finish() as `closing`
    bool add_says_go_on = false;             // a sink whose add() returns bool: false ends the run
    std::function<bool(Bytes&)> next_input;  // source_range: encodes the next value; false at the end

    [[nodiscard]] bool runs_in_processes() const noexcept { return kind != ElementKind::source_range; }
    [[nodiscard]] unsigned process_count() const noexcept {
        return kind == ElementKind::stage ? options.workers : (runs_in_processes() ? 1U : 0U);
    }
};

/// What a finished run leaves for the Pipeline to report.
struct RunReport {
    std::vector<StageStats> stats;
    std::vector<ItemError> errors;
    std::optional<Bytes> closing_value;  // the encoded value of the sink's finish()
    std::string failure;                 // why the whole run failed; empty if it did not
};

/// The text of an item's error as a run's failure names it.
inline std::string describe_item_error(const ItemError& error) {
    return error.element_name + ": " + error.error.what();
}

/// A plan's statistics, named, before anything ran.
inline std::vector<StageStats> initial_stats(const std::vector<ElementPlan>& plans) {
    std::vector<StageStats> stats(plans.size());
    for (std::size_t i = 0; i < plans.size(); ++i) stats[i].name = plans[i].name;
    return stats;
}

/// The common checks of a plan, for both engines.
inline void validate_plan(const std::vector<ElementPlan>& plans) {
    for (const ElementPlan& plan : plans) {
        if (plan.kind == ElementKind::stage && plan.options.workers == 0) {
            throw std::invalid_argument{"multiworker::Pipeline: " + plan.name +
                                        " has workers = 0 (use PipelineOptions::in_process to run in-process)"};
        }
        if (plan.options.capacity == 0) {
            throw std::invalid_argument{"multiworker::Pipeline: " + plan.name + " has capacity = 0"};
        }
    }
}

}  // namespace multiworker::detail
