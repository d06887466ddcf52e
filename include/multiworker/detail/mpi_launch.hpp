#pragma once

// The two ends of relaunch_under_mpirun() (mpi_launch.hpp): the launching
// process, which starts mpirun, forwards termination signals to it and
// waits, and rank 0 of the job, which tells it how main() ended. Under
// --enable-recovery mpirun exits 0 whatever its ranks returned, so rank 0
// writes its status to a file the launcher names in MULTIWORKER_LAUNCH_STATUS.

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace multiworker::detail {

inline constexpr const char* launch_status_variable = "MULTIWORKER_LAUNCH_STATUS";

// An on_exit() handler: writes the status main() returned (or exit() was given) to `file`.
inline void write_exit_status(int status, void* file) {
    if (std::FILE* out = std::fopen(static_cast<const char*>(file), "w")) {
        std::fprintf(out, "%d\n", status);
        std::fclose(out);
    }
}

/// In rank 0 of a job a launcher started: how main() ends goes to the file it named.
inline void report_exit_status_to_launcher() {
    const char* path = std::getenv(launch_status_variable);
    if (path == nullptr) return;  // started by mpirun directly: nobody waits for the status
    if (::on_exit(&write_exit_status, const_cast<char*>(path)) != 0) {
        std::fprintf(stderr, "multiworker: cannot report rank 0's exit status to its launcher\n");
    }
}

/// How the launched mpirun ended.
struct LaunchedJob {
    int wait_status = 0;
    int forwarded_signal = 0;  // the last termination signal passed on to it (0: none)
};

/// Starts `command` (its environment naming `status_file`) and waits for it,
/// forwarding SIGINT, SIGTERM and SIGHUP to it. Throws std::system_error if
/// it cannot start.
inline LaunchedJob run_launcher(const std::vector<std::string>& command, const std::string& status_file) {
    ::setenv(launch_status_variable, status_file.c_str(), 1);  // this process only waits from now on
    std::vector<char*> argv;
    for (const std::string& word : command) argv.push_back(const_cast<char*>(word.c_str()));
    argv.push_back(nullptr);
    int exec_error[2];
    if (::pipe2(exec_error, O_CLOEXEC) != 0) throw std::system_error{errno, std::generic_category(), "pipe2"};
    const pid_t parent = ::getpid();
    const pid_t child = ::fork();
    if (child < 0) throw std::system_error{errno, std::generic_category(), "fork"};
    if (child == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // the launcher killed: mpirun ends its job
        if (::getppid() != parent) ::_exit(127);
        ::execvp(argv[0], argv.data());
        const int error = errno;
        (void)!::write(exec_error[1], &error, sizeof error);
        ::_exit(127);
    }
    ::close(exec_error[1]);
    static volatile pid_t launched = 0;  // for the signal handler
    static volatile sig_atomic_t forwarded_signal = 0;
    launched = child;
    forwarded_signal = 0;
    struct sigaction forward {};
    forward.sa_handler = [](int signal) {
        forwarded_signal = signal;
        ::kill(launched, signal);
    };
    struct sigaction previous[3]{};
    const int forwarded[3] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; ++i) ::sigaction(forwarded[i], &forward, &previous[i]);
    int error = 0;
    ssize_t got = 0;
    while ((got = ::read(exec_error[0], &error, sizeof error)) < 0 && errno == EINTR) {
    }
    ::close(exec_error[0]);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    for (int i = 0; i < 3; ++i) ::sigaction(forwarded[i], &previous[i], nullptr);
    if (got == static_cast<ssize_t>(sizeof error)) {  // else end of file: the exec succeeded and closed it
        ::unsetenv(launch_status_variable);
        throw std::system_error{error, std::generic_category(),
                                "multiworker::relaunch_under_mpirun: cannot run " + command.front()};
    }
    return LaunchedJob{status, forwarded_signal};
}

/// The launcher's exit status: rank 0's; when it left none, 128 + the signal
/// that ended the job, or 1, with a message.
inline int launched_job_status(const std::string& status_file, const LaunchedJob& job, const std::string& mpirun) {
    int status = 0;
    const bool reported = static_cast<bool>(std::ifstream{status_file} >> status);
    std::filesystem::remove(status_file);
    if (reported) return status & 0xff;  // what exit(status) would have given the launcher's parent
    const std::string how = WIFEXITED(job.wait_status)
                                ? "exited with status " + std::to_string(WEXITSTATUS(job.wait_status))
                                : "ended with wait status " + std::to_string(job.wait_status);
    if (job.forwarded_signal != 0) {
        std::fprintf(stderr, "multiworker: the job was ended by signal %d, passed on to %s, which %s\n",
                     job.forwarded_signal, mpirun.c_str(), how.c_str());
        return 128 + job.forwarded_signal;
    }
    std::fprintf(stderr, "multiworker: rank 0 of the job ended without an exit status (%s %s)\n", mpirun.c_str(),
                 how.c_str());
    return 1;
}

}  // namespace multiworker::detail
