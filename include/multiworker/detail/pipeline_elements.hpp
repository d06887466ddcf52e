#pragma once

// The typed elements behind multiworker::source(), from(), stage() and
// sink(): each holds its object (or range), knows its input and output
// types, and makes the ElementPlan its engine runs. A runner executes in a
// worker on that worker's copy of the object (the fork copies it), or
// in-process on the element's own.

#include <multiworker/detail/codec.hpp>
#include <multiworker/detail/item_channel.hpp>
#include <multiworker/detail/method_traits.hpp>
#include <multiworker/detail/pipeline_plan.hpp>
#include <multiworker/detail/processor_support.hpp>
#include <multiworker/emit.hpp>

#include <functional>
#include <iterator>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

namespace multiworker::detail {

/// No type: a source's input, a sink's output.
struct no_item {};

template <class P>
struct emit_parameter : std::false_type {};
template <class U>
struct emit_parameter<Emit<U>&> : std::true_type {
    using item = U;
};

/// What a method given to source(), stage() or sink() looks like.
template <auto Method>
struct element_method {
    using traits = method_traits<decltype(Method)>;
    using object = typename traits::object_type;
    using parameters = typename traits::parameters;
    using result = typename traits::return_type;
    static constexpr std::size_t arity = std::tuple_size_v<parameters>;

    template <std::size_t I>
    using parameter = std::tuple_element_t<I, parameters>;
    template <std::size_t I>
    using value_parameter = std::remove_cvref_t<parameter<I>>;
};

/// The current task's item channel; a method with an Emit runs only where one is set.
inline ItemChannel& running_item_channel() {
    ItemChannel* channel = current_item_channel();
    if (channel == nullptr) throw std::logic_error{"multiworker: an Emit was used outside a pipeline run"};
    return *channel;
}

/// Encodes `value` into `buffer` and sends it as the task's result.
template <class V>
void send_value(Bytes& buffer, const V& value, const ResultSender& send) {
    buffer.clear();
    encode_values(buffer, value);
    send(EncodedView{buffer, {}});
}

/// `void read(Emit<U>&)`: runs once, in a process of its own.
template <auto Method>
class SourceElement {
    using method = element_method<Method>;
    static_assert(method::arity == 1 && emit_parameter<typename method::template parameter<0>>::value &&
                      std::is_void_v<typename method::result>,
                  "multiworker::source<&T::m>: m must be void m(multiworker::Emit<U>&)");

public:
    using object_type = typename method::object;
    using input = no_item;
    using output = typename emit_parameter<typename method::template parameter<0>>::item;

    explicit SourceElement(object_type object) : object_{std::make_unique<object_type>(std::move(object))} {}

    [[nodiscard]] ElementPlan plan(std::size_t /*index*/) {
        ElementPlan plan;
        plan.kind = ElementKind::source_process;
        plan.name = "source";
        plan.items = ItemMode::streamed;
        plan.runner = [object = object_.get()](std::span<const char>, const ResultSender& send) {
            Emit<output> out{running_item_channel()};
            std::invoke(Method, *object, out);
            send(EncodedView{});
        };
        plan.hooks = hooks_of(*object_);
        return plan;
    }

private:
    std::unique_ptr<object_type> object_;  // in place for the runners, however the element moves
};

/// A range iterated in the parent, one item per element. Plain begin()/end()
/// rather than std::ranges: clang 14 cannot check libstdc++ 12's range concepts.
template <class Range>
class RangeSource {
    using iterator = decltype(std::begin(std::declval<Range&>()));

public:
    using input = no_item;
    using output = std::remove_cvref_t<decltype(*std::declval<iterator&>())>;

    explicit RangeSource(Range range) : range_{std::make_unique<Range>(std::move(range))} {}

    [[nodiscard]] ElementPlan plan(std::size_t /*index*/) {
        ElementPlan plan;
        plan.kind = ElementKind::source_range;
        plan.name = "source";
        plan.next_input = [range = range_.get(), at = std::optional<iterator>{}](Bytes& out) mutable {
            if (!at) at = std::begin(*range);
            if (*at == std::end(*range)) return false;
            encode_values(out, static_cast<const output&>(**at));
            ++*at;
            return true;
        };
        return plan;
    }

private:
    std::unique_ptr<Range> range_;  // in place for the iterator, however the element moves
};

/// `U m(const In&)` (a map) or `void m(const In&, Emit<U>&)` (filter, flat-map).
template <auto Method>
class StageElement {
    using method = element_method<Method>;
    static constexpr bool emits =
        method::arity == 2 &&
        emit_parameter<std::tuple_element_t<method::arity - 1, typename method::parameters>>::value;
    static_assert((method::arity == 1 && !std::is_void_v<typename method::result>) ||
                      (emits && std::is_void_v<typename method::result>),
                  "multiworker::stage<&T::m>: m must be U m(const In&) or void m(const In&, multiworker::Emit<U>&)");

    template <bool Emits, class = void>
    struct output_of {
        using type = std::remove_cvref_t<typename method::result>;
    };
    template <class Unused>
    struct output_of<true, Unused> {
        using type = typename emit_parameter<typename method::template parameter<method::arity - 1>>::item;
    };

public:
    using object_type = typename method::object;
    using input = typename method::template value_parameter<0>;
    using output = typename output_of<emits>::type;

    StageElement(object_type object, StageOptions options)
        : object_{std::make_unique<object_type>(std::move(object))}, options_{std::move(options)} {}

    [[nodiscard]] ElementPlan plan(std::size_t index) {
        ElementPlan plan;
        plan.kind = ElementKind::stage;
        plan.name = options_.name.empty() ? "stage " + std::to_string(index) : options_.name;
        plan.options = options_;
        plan.items = emits ? ItemMode::held : ItemMode::none;
        plan.runner = [object = object_.get(), buffer = Bytes{}](std::span<const char> arguments,
                                                                 const ResultSender& send) mutable {
            auto [in] = decode_values<input>(arguments);
            if constexpr (emits) {
                Emit<output> out{running_item_channel()};
                std::invoke(Method, *object, in, out);
                send(EncodedView{});
            } else {
                send_value(buffer, std::invoke(Method, *object, in), send);
            }
        };
        plan.hooks = hooks_of(*object_);
        return plan;
    }

private:
    std::unique_ptr<object_type> object_;
    StageOptions options_;
};

/// What a sink whose add() returns bool answers for each item.
enum class SinkVerdict : std::uint8_t {
    go_on = 1,    // add() returned true
    stop = 0,     // add() returned false: the run ends
    skipped = 2,  // add() said stop before: this item was not added (it is unprocessed)
};

/// What a sink's finish() returns; void without one.
template <auto... Finish>
struct finish_value {
    using type = void;
};
template <auto Finish>
struct finish_value<Finish> {
    using type = std::remove_cvref_t<typename element_method<Finish>::result>;
};

/// `add(const In&)` for every item in one process, then `finish()` if given.
template <auto Add, auto... Finish>
class SinkElement {
    using add_method = element_method<Add>;
    static_assert(sizeof...(Finish) <= 1, "multiworker::sink<&T::add, &T::finish>: at most one finish");
    static_assert(add_method::arity == 1 && (std::is_void_v<typename add_method::result> ||
                                             std::is_same_v<typename add_method::result, bool>),
                  "multiworker::sink<&T::add>: add must be void add(const In&), or bool add(const In&) "
                  "(false ends the run)");
    static constexpr bool add_says_go_on = std::is_same_v<typename add_method::result, bool>;

public:
    using object_type = typename add_method::object;
    using input = typename add_method::template value_parameter<0>;
    using output = no_item;
    /// What finish() returns (void without finish).
    using value_type = typename finish_value<Finish...>::type;

    explicit SinkElement(object_type object) : object_{std::make_unique<object_type>(std::move(object))} {}

    [[nodiscard]] ElementPlan plan(std::size_t /*index*/) {
        ElementPlan plan;
        plan.kind = ElementKind::sink;
        plan.name = "sink";
        plan.add_says_go_on = add_says_go_on;
        if constexpr (add_says_go_on) {
            plan.runner = [object = object_.get(), buffer = Bytes{}, said_stop = false](
                              std::span<const char> arguments, const ResultSender& send) mutable {
                auto [in] = decode_values<input>(arguments);
                // Items already on their way when add() said stop are not added.
                SinkVerdict verdict = SinkVerdict::skipped;
                if (!said_stop) {
                    said_stop = !std::invoke(Add, *object, in);
                    verdict = said_stop ? SinkVerdict::stop : SinkVerdict::go_on;
                }
                send_value(buffer, static_cast<std::uint8_t>(verdict), send);
            };
        } else {
            plan.runner = [object = object_.get()](std::span<const char> arguments, const ResultSender& send) {
                auto [in] = decode_values<input>(arguments);
                std::invoke(Add, *object, in);
                send(EncodedView{});
            };
        }
        plan.hooks = hooks_of(*object_);
        if constexpr (sizeof...(Finish) == 1) {
            plan.hooks.closing = [object = object_.get(), buffer = Bytes{}](std::span<const char>,
                                                                            const ResultSender& send) mutable {
                if constexpr (std::is_void_v<value_type>) {
                    (std::invoke(Finish, *object), ...);
                    send(EncodedView{});
                } else {
                    send_value(buffer, (std::invoke(Finish, *object), ...), send);
                }
            };
        }
        return plan;
    }

private:
    std::unique_ptr<object_type> object_;
};

}  // namespace multiworker::detail
