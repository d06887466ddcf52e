// Must not compile: add() is given fewer arguments than the method takes.

#include <multiworker/multiworker.hpp>

#include <string>

struct Checker {
    bool check(const std::string& url, int depth) const { return !url.empty() && depth > 0; }
};

int main() {
    multiworker::Processor<Checker, &Checker::check> processor{Checker{}, {.workers = 1}};
    processor.add(std::string{"https://example.org"});
}
