// Must not compile: the method returns a struct with no serialize().

#include <multiworker/multiworker.hpp>

struct Point {
    int x = 0;
};

struct Maker {
    Point make(int x) const { return Point{x}; }
};

int main() {
    multiworker::Processor<Maker, &Maker::make> processor{Maker{}, {.workers = 1}};
    processor.add(1);
}
