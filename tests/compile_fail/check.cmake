# Builds a target that must not compile and checks how it fails: the first error the compiler
# reports is the library's own message, and at most MAX_ERRORS errors follow it in all, so that
# a newcomer reads the library's words first and little else. Run with `cmake -P`.
#
# Required -D variables: BINARY_DIR (the build tree), TARGET, MESSAGE (a regular expression the
# first error must match), MAX_ERRORS.

execute_process(
    COMMAND ${CMAKE_COMMAND} --build ${BINARY_DIR} --target ${TARGET}
    RESULT_VARIABLE result
    OUTPUT_VARIABLE output
    ERROR_VARIABLE output)

if(result EQUAL 0)
    message(FATAL_ERROR "${TARGET} compiled, but it must not")
endif()

string(REGEX MATCHALL "[^\n]*error:[^\n]*" errors "${output}")
list(LENGTH errors error_count)
if(error_count EQUAL 0)
    message(FATAL_ERROR "${TARGET} failed without a compiler error:\n${output}")
endif()
list(GET errors 0 first_error)
if(NOT first_error MATCHES "${MESSAGE}")
    message(FATAL_ERROR "${TARGET}: the first error is not the library's message (${MESSAGE}):\n${output}")
endif()
if(error_count GREATER MAX_ERRORS)
    message(FATAL_ERROR "${TARGET}: ${error_count} errors, more than ${MAX_ERRORS}:\n${output}")
endif()
message(STATUS "${TARGET}: fails with the library's message first, ${error_count} error(s) in all")
