# LoratuneVersion.cmake - the project version (project(loratune VERSION ...) in the top-level
# CMakeLists.txt) is the one place the version is written. The .so's VERSION/SOVERSION, the
# pkg-config file, the CMake package, the Debian packages and the Python package (through
# scikit-build-core's regex over CMakeLists.txt) read it from there. The public header keeps
# its own LT_VERSION_* macros (C code needs them without CMake): this check refuses to
# configure when they differ, so the two cannot drift apart.
file(STRINGS "${CMAKE_CURRENT_SOURCE_DIR}/include/loratune.h" _lt_version_lines
  REGEX "^#define LT_VERSION_(MAJOR|MINOR|PATCH) +[0-9]+")
set(_lt_header_version "")
foreach(_part MAJOR MINOR PATCH)
  set(_value "")
  foreach(_line IN LISTS _lt_version_lines)
    if(_line MATCHES "^#define LT_VERSION_${_part} +([0-9]+)")
      set(_value "${CMAKE_MATCH_1}")
    endif()
  endforeach()
  if(_value STREQUAL "")
    message(FATAL_ERROR "include/loratune.h: no '#define LT_VERSION_${_part} <number>' line")
  endif()
  list(APPEND _lt_header_version "${_value}")
endforeach()
list(JOIN _lt_header_version "." _lt_header_version)
if(NOT _lt_header_version STREQUAL PROJECT_VERSION)
  message(FATAL_ERROR "include/loratune.h says version ${_lt_header_version} (LT_VERSION_MAJOR/MINOR/PATCH) "
    "but CMakeLists.txt's project() says ${PROJECT_VERSION}: change both together")
endif()
unset(_lt_version_lines)
unset(_lt_header_version)
