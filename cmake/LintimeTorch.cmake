# Imports LibTorch from the torch wheel in the project virtualenv (.venv) as plain imported
# targets. We do not use find_package(Torch): it enables the CUDA language and needs nvcc even
# for CPU-only builds, and probes many things we do not use.
# Under pip (scikit-build-core) the package is compiled against the torch of the Python running pip.
if(SKBUILD AND Python_EXECUTABLE)
  set(LINTIME_PYTHON "${Python_EXECUTABLE}" CACHE FILEPATH "Python of the environment holding torch")
else()
  set(LINTIME_PYTHON "${CMAKE_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH "Python of the venv holding torch")
endif()
execute_process(
  COMMAND "${LINTIME_PYTHON}" -c "import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__)"
  OUTPUT_VARIABLE _torch_out RESULT_VARIABLE _torch_rc OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR "torch not found in ${LINTIME_PYTHON}: run scripts/bootstrap.sh (or `make setup`) first")
endif()
string(REPLACE "\n" ";" _torch_out "${_torch_out}")
list(GET _torch_out 0 TORCH_DIR)
list(GET _torch_out 1 TORCH_VERSION)
message(STATUS "lintime: torch ${TORCH_VERSION} at ${TORCH_DIR}")

set(_torch_includes "${TORCH_DIR}/include" "${TORCH_DIR}/include/torch/csrc/api/include")
add_library(lintime::torch INTERFACE IMPORTED)
target_include_directories(lintime::torch SYSTEM INTERFACE ${_torch_includes})
# libstdc++ goes first: libtorch_cpu.so exports unversioned copies of std::filesystem functions
# that would otherwise capture our calls (std::filesystem::remove_all crashed inside them).
# Listed first, libstdc++'s versioned definitions win at link and at load time.
target_link_libraries(lintime::torch INTERFACE
  "-Wl,--push-state,--no-as-needed" stdc++ "-Wl,--pop-state"
  "${TORCH_DIR}/lib/libtorch_cpu.so" "${TORCH_DIR}/lib/libc10.so")
# Executables find torch's libraries (and through their RUNPATH, the nvidia/ wheels) at run time.
set(CMAKE_BUILD_RPATH "${TORCH_DIR}/lib")
set(CMAKE_INSTALL_RPATH "${TORCH_DIR}/lib")

# CUDA: compiled when nvcc is present (AUTO) so that CPU-only machines still build and test.
set(LINTIME_HAS_CUDA OFF)
if(NOT LINTIME_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_ARCHITECTURES "${LINTIME_CUDA_ARCHS}")
    set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 knows no CUDA20 dialect for nvcc; the kernels need C++17
    set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(LINTIME_HAS_CUDA ON)
    add_library(lintime::torch_cuda INTERFACE IMPORTED)
    # --no-as-needed: nothing references libtorch_cuda directly, but loading it registers the
    # CUDA backend (hooks, allocator) that at::hasCUDA() and CUDA tensors need.
    target_link_libraries(lintime::torch_cuda INTERFACE lintime::torch "-Wl,--no-as-needed"
      "${TORCH_DIR}/lib/libtorch_cuda.so" "${TORCH_DIR}/lib/libc10_cuda.so" "-Wl,--as-needed" CUDA::cudart)
    message(STATUS "lintime: CUDA sources compiled for ${LINTIME_CUDA_ARCHS}")
  elseif(LINTIME_CUDA STREQUAL "ON")
    message(FATAL_ERROR "LINTIME_CUDA=ON but no CUDA compiler was found")
  else()
    message(STATUS "lintime: no nvcc, CPU-only build")
  endif()
endif()
