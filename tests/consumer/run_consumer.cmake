# Configure, build and run a tiny multiworker consumer project; run with `cmake -P`.
#
# Required -D variables:
#   MODE                    find_package | add_subdirectory
#   MULTIWORKER_SOURCE_DIR  multiworker source tree
#   MULTIWORKER_BINARY_DIR  multiworker build tree to install from (MODE=find_package only)
#   WORK_DIR                scratch directory, wiped first
#   CXX_COMPILER            compiler for the consumer build
# Optional: GENERATOR, MAKE_PROGRAM (default: CMake's defaults).

cmake_minimum_required(VERSION 3.25)

foreach(var IN ITEMS MODE MULTIWORKER_SOURCE_DIR WORK_DIR CXX_COMPILER)
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
        message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
    endif()
endforeach()

set(consumer_build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

set(configure_args
    -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
    -DCMAKE_BUILD_TYPE=Release)
if(DEFINED GENERATOR AND NOT GENERATOR STREQUAL "")
    list(APPEND configure_args -G ${GENERATOR})
endif()
if(DEFINED MAKE_PROGRAM AND NOT MAKE_PROGRAM STREQUAL "")
    list(APPEND configure_args -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()

if(MODE STREQUAL "find_package")
    if(NOT DEFINED MULTIWORKER_BINARY_DIR)
        message(FATAL_ERROR "run_consumer.cmake: MODE=find_package needs -DMULTIWORKER_BINARY_DIR")
    endif()
    set(prefix ${WORK_DIR}/prefix)
    message(STATUS "Installing ${MULTIWORKER_BINARY_DIR} into ${prefix}")
    execute_process(
        COMMAND ${CMAKE_COMMAND} --install ${MULTIWORKER_BINARY_DIR} --prefix ${prefix}
        COMMAND_ERROR_IS_FATAL ANY)
    set(consumer_source ${CMAKE_CURRENT_LIST_DIR})
    # Don't let the user package registry or a system-wide install satisfy find_package.
    list(APPEND configure_args
        -DCMAKE_PREFIX_PATH=${prefix}
        -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
        -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
elseif(MODE STREQUAL "add_subdirectory")
    set(consumer_source ${CMAKE_CURRENT_LIST_DIR}/../subdir_consumer)
    list(APPEND configure_args -DMULTIWORKER_SOURCE_DIR=${MULTIWORKER_SOURCE_DIR})
else()
    message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()

message(STATUS "Configuring consumer (${MODE})")
execute_process(
    COMMAND ${CMAKE_COMMAND} -S ${consumer_source} -B ${consumer_build} ${configure_args}
    COMMAND_ERROR_IS_FATAL ANY)

if(MODE STREQUAL "find_package")
    # The package must come from the prefix we just installed to, nowhere else.
    file(STRINGS ${consumer_build}/CMakeCache.txt found_dir REGEX "^multiworker_DIR:")
    string(REGEX REPLACE "^multiworker_DIR:[A-Z]+=" "" found_dir "${found_dir}")
    file(REAL_PATH "${found_dir}" found_dir)
    file(REAL_PATH "${prefix}" real_prefix)
    string(FIND "${found_dir}" "${real_prefix}/" pos)
    if(NOT pos EQUAL 0)
        message(FATAL_ERROR "find_package(multiworker) used ${found_dir}, not the test prefix ${prefix}")
    endif()
    message(STATUS "multiworker_DIR = ${found_dir}")
endif()

message(STATUS "Building consumer (${MODE})")
execute_process(
    COMMAND ${CMAKE_COMMAND} --build ${consumer_build}
    COMMAND_ERROR_IS_FATAL ANY)

message(STATUS "Running consumer (${MODE})")
execute_process(
    COMMAND ${consumer_build}/consumer
    COMMAND_ERROR_IS_FATAL ANY)

message(STATUS "Consumer (${MODE}) OK")
