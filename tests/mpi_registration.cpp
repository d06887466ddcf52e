// Linked into the Processor suites' binaries so that they can run on Backend::mpi
// (MULTIWORKER_BACKEND=mpi): including the header registers the backend.
#include <multiworker/mpi.hpp>
