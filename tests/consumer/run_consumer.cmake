# Configure, build and run a tiny multiworker consumer project; run with `cmake -P`.
#
# Required -D variables:
#   MODE                    find_package | add_subdirectory | fetch_content | pkg_config
#   MULTIWORKER_SOURCE_DIR  multiworker source tree
#   MULTIWORKER_BINARY_DIR  multiworker build tree to install from (MODE=find_package and
#                           MODE=pkg_config only)
#   WORK_DIR                scratch directory, wiped first
#   CXX_COMPILER            compiler for the consumer build
# Optional: GENERATOR, MAKE_PROGRAM (default: CMake's defaults; unused by MODE=pkg_config).
#
# MODE=pkg_config builds no CMake project: it compiles main.cpp with nothing but
# `${CXX} -std=c++20 main.cpp $(pkg-config --cflags --libs multiworker)`, as a Makefile user would.

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

if(NOT MODE MATCHES "^(find_package|add_subdirectory|fetch_content|pkg_config)$")
    message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()

# The installed-package modes consume an install of the build tree into a scratch prefix.
if(MODE STREQUAL "find_package" OR MODE STREQUAL "pkg_config")
    if(NOT DEFINED MULTIWORKER_BINARY_DIR)
        message(FATAL_ERROR "run_consumer.cmake: MODE=${MODE} needs -DMULTIWORKER_BINARY_DIR")
    endif()
    set(prefix ${WORK_DIR}/prefix)
    message(STATUS "Installing ${MULTIWORKER_BINARY_DIR} into ${prefix}")
    execute_process(
        COMMAND ${CMAKE_COMMAND} --install ${MULTIWORKER_BINARY_DIR} --prefix ${prefix}
        COMMAND_ERROR_IS_FATAL ANY)
    file(REAL_PATH "${prefix}" real_prefix)
endif()

if(MODE STREQUAL "pkg_config")
    # Missing pkg-config fails the test rather than skipping it: scripts/deps installs it.
    find_program(PKG_CONFIG_EXECUTABLE pkg-config NO_CACHE)
    if(NOT PKG_CONFIG_EXECUTABLE)
        message(FATAL_ERROR "run_consumer.cmake: pkg-config not found (scripts/deps installs it)")
    endif()

    # Where multiworker.pc goes is the build's choice (MULTIWORKER_INSTALL_PKGCONFIGDIR): find it
    # in the prefix rather than repeat that here. Exactly one, or the install is wrong.
    file(GLOB_RECURSE pc_files LIST_DIRECTORIES false ${prefix}/multiworker.pc)
    list(LENGTH pc_files pc_count)
    if(NOT pc_count EQUAL 1)
        message(FATAL_ERROR
            "expected one multiworker.pc under ${prefix}, found ${pc_count}: ${pc_files}")
    endif()
    get_filename_component(pc_dir ${pc_files} DIRECTORY)
    # In front of any PKG_CONFIG_PATH the caller has; spdlog.pc and fmt.pc come from there or from
    # pkg-config's default path.
    if("$ENV{PKG_CONFIG_PATH}" STREQUAL "")
        set(ENV{PKG_CONFIG_PATH} "${pc_dir}")
    else()
        set(ENV{PKG_CONFIG_PATH} "${pc_dir}:$ENV{PKG_CONFIG_PATH}")
    endif()

    # The .pc must be the one just installed, not a system-wide multiworker.pc.
    execute_process(
        COMMAND ${PKG_CONFIG_EXECUTABLE} --variable=pcfiledir multiworker
        OUTPUT_VARIABLE found_dir
        OUTPUT_STRIP_TRAILING_WHITESPACE
        COMMAND_ERROR_IS_FATAL ANY)
    file(REAL_PATH "${found_dir}" found_dir)
    string(FIND "${found_dir}" "${real_prefix}/" pos)
    if(NOT pos EQUAL 0)
        message(FATAL_ERROR
            "pkg-config used multiworker.pc in ${found_dir}, not the test prefix ${prefix}")
    endif()
    message(STATUS "multiworker.pc from ${found_dir}")

    # Fails (and prints why) if multiworker.pc is malformed or a package it Requires is missing.
    execute_process(
        COMMAND ${PKG_CONFIG_EXECUTABLE} --cflags --libs multiworker
        OUTPUT_VARIABLE pc_flags
        OUTPUT_STRIP_TRAILING_WHITESPACE
        COMMAND_ERROR_IS_FATAL ANY)
    message(STATUS "pkg-config --cflags --libs multiworker: ${pc_flags}")
    separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")

    # -std=c++20 is the user's to give (multiworker.pc doesn't force a standard); nothing else is
    # added, so whatever main.cpp needs beyond it must come from pkg-config.
    set(consumer_exe ${WORK_DIR}/consumer)
    set(compile_command ${CXX_COMPILER} -std=c++20 ${CMAKE_CURRENT_LIST_DIR}/main.cpp ${pc_flags}
        -o ${consumer_exe})
    list(JOIN compile_command " " compile_command_line)
    message(STATUS "Compiling consumer (${MODE}): ${compile_command_line}")
    execute_process(
        COMMAND ${compile_command}
        WORKING_DIRECTORY ${WORK_DIR}
        COMMAND_ERROR_IS_FATAL ANY)

    message(STATUS "Running consumer (${MODE})")
    execute_process(
        COMMAND ${consumer_exe}
        COMMAND_ERROR_IS_FATAL ANY)

    message(STATUS "Consumer (${MODE}) OK")
    return()
endif()

# The other modes configure and build a CMake consumer project.
if(MODE STREQUAL "find_package")
    set(consumer_source ${CMAKE_CURRENT_LIST_DIR})
    # Don't let the user package registry or a system-wide install satisfy find_package.
    list(APPEND configure_args
        -DCMAKE_PREFIX_PATH=${prefix}
        -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
        -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
elseif(MODE STREQUAL "add_subdirectory")
    set(consumer_source ${CMAKE_CURRENT_LIST_DIR}/../subdir_consumer)
    list(APPEND configure_args -DMULTIWORKER_SOURCE_DIR=${MULTIWORKER_SOURCE_DIR})
elseif(MODE STREQUAL "fetch_content")
    # Not FETCHCONTENT_FULLY_DISCONNECTED: that would skip the population step a real user runs.
    # With only a SOURCE_DIR there is nothing to download anyway.
    set(consumer_source ${CMAKE_CURRENT_LIST_DIR}/fetch_content)
    list(APPEND configure_args -DMULTIWORKER_SOURCE_DIR=${MULTIWORKER_SOURCE_DIR})
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
