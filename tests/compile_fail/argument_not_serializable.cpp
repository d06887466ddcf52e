// Must not compile: the method takes a std::unique_ptr, which has no serializer
// (and means nothing in another process).

#include <multiworker/multiworker.hpp>

#include <memory>

struct Owner {
    int take(std::unique_ptr<int> value) const { return *value; }
};

int main() {
    multiworker::Processor<Owner, &Owner::take> processor{Owner{}, {.workers = 1}};
    processor.add(std::make_unique<int>(1));
}
