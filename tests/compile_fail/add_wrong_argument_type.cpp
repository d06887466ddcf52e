// Must not compile: add() is given an argument that does not convert to the
// method's parameter type.

#include <multiworker/multiworker.hpp>

#include <string>

struct Checker {
    bool check(const std::string& url, int depth) const { return !url.empty() && depth > 0; }
};

int main() {
    multiworker::Processor<Checker, &Checker::check> processor{Checker{}, {.workers = 1}};
    processor.add(std::string{"https://example.org"}, std::string{"not a number"});
}
