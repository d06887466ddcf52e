# Fails unless README.md contains each file given in FILES verbatim (the README shows the crawler whole).
# Usage: cmake -D README=<path> -D "FILES=<a>;<b>" -P check_readme.cmake
file(READ "${README}" readme)
foreach(path IN LISTS FILES)
    file(READ "${path}" content)
    string(FIND "${readme}" "${content}" position)
    if(position EQUAL -1)
        message(FATAL_ERROR "README.md does not show ${path} as it is: update the listing in README.md")
    endif()
endforeach()
message(STATUS "README.md shows every listed file as it is")
