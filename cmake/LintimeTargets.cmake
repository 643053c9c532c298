# One static library per src/ directory, sources globbed so that adding a file needs no CMake
# edit. .cu files join only when CUDA is enabled. WHOLE_ARCHIVE keeps op registrations
# (static initialisers) from being dropped by the linker.
function(lintime_add_library name dir)
  cmake_parse_arguments(ARG "WHOLE_ARCHIVE" "" "DEPS" ${ARGN})
  file(GLOB_RECURSE _sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/${dir}/*.cpp)
  if(LINTIME_HAS_CUDA)
    file(GLOB_RECURSE _cuda_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/${dir}/*.cu)
    list(APPEND _sources ${_cuda_sources})
  endif()
  if(NOT _sources)
    add_library(${name}_impl INTERFACE)
  else()
    add_library(${name}_impl STATIC ${_sources})
    target_include_directories(${name}_impl PUBLIC ${CMAKE_SOURCE_DIR}/src)
    target_compile_options(${name}_impl PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
    if(LINTIME_HAS_CUDA)
      target_compile_definitions(${name}_impl PUBLIC LINTIME_WITH_CUDA=1)
    endif()
  endif()
  if(NOT _sources)
    target_link_libraries(${name}_impl INTERFACE ${ARG_DEPS})
  else()
    target_link_libraries(${name}_impl PUBLIC ${ARG_DEPS})
    if(LINTIME_HAS_CUDA)
      target_link_libraries(${name}_impl PUBLIC lintime::torch_cuda)
    endif()
  endif()
  add_library(${name} INTERFACE)
  if(ARG_WHOLE_ARCHIVE AND _sources)
    target_link_libraries(${name} INTERFACE "$<LINK_LIBRARY:WHOLE_ARCHIVE,${name}_impl>")
  else()
    target_link_libraries(${name} INTERFACE ${name}_impl)
  endif()
endfunction()

# Every tests/<dir>/test_*.cpp becomes its own executable linked against lintime_<dir>
# (or the given target), registered with CTest through gtest discovery.
function(lintime_add_tests dir target)
  file(GLOB _tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${dir}/test_*.cpp)
  foreach(_test ${_tests})
    get_filename_component(_name ${_test} NAME_WE)
    # test_*_cuda.cpp carry the label `cuda` instead (`ctest -L cuda` on a GPU machine; one
    # label only: gtest_discover_tests cannot pass a list through PROPERTIES).
    set(_labels "${dir}")
    if(_name MATCHES "_cuda$")
      set(_labels cuda)
    endif()
    add_executable(${_name} ${_test})
    target_link_libraries(${_name} PRIVATE ${target} lintime_test_support GTest::gtest GTest::gtest_main)
    gtest_discover_tests(${_name} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
      PROPERTIES LABELS "${_labels}"
      # One intra-op thread per test: ctest runs tests in parallel, and ATen worker threads
      # spinning against each other made small-op tests 10-100x slower on 2 cores.
      ENVIRONMENT "LINTIME_SOURCE_DIR=${CMAKE_SOURCE_DIR};OMP_NUM_THREADS=1")
  endforeach()
endfunction()
