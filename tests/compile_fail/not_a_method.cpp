// Must not compile: the Processor is given a data member, not a member function.

#include <multiworker/multiworker.hpp>

struct Thing {
    int value = 0;
};

int main() {
    multiworker::Processor<Thing, &Thing::value> processor{Thing{}, {.workers = 1}};
    processor.add();
}
