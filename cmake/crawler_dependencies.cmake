# What the crawler example (examples/crawler) and its Checker's test need, found once for both:
# libcurl (its workers fetch with it) and cpp-httplib (its local server, year_server.hpp). Debian
# ships cpp-httplib compiled, with a pkg-config file and no CMake config; the file's flags
# (CPPHTTPLIB_OPENSSL_SUPPORT, ...) must match the library's.
#
# Defines the INTERFACE target multiworker_crawler_dependencies when both are found; otherwise
# MULTIWORKER_CRAWLER_MISSING names what is missing, for the skip messages.

find_package(CURL)
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
    pkg_check_modules(CPP_HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
endif()

set(MULTIWORKER_CRAWLER_MISSING "")
if(NOT CURL_FOUND)
    string(APPEND MULTIWORKER_CRAWLER_MISSING " libcurl (libcurl4-openssl-dev)")
endif()
if(NOT CPP_HTTPLIB_FOUND)
    string(APPEND MULTIWORKER_CRAWLER_MISSING " cpp-httplib (libcpp-httplib-dev, found through pkg-config)")
endif()

if(MULTIWORKER_CRAWLER_MISSING STREQUAL "")
    add_library(multiworker_crawler_dependencies INTERFACE)
    target_link_libraries(multiworker_crawler_dependencies INTERFACE CURL::libcurl PkgConfig::CPP_HTTPLIB)
endif()
