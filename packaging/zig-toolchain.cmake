# A CMake toolchain file: build with zig's clang (the `ziglang` package on PyPI) against an old
# glibc's symbol versions and a static libc++, so that the wheel runs on any Linux with at least
# that glibc (packaging/build-wheel; README's "Wheels").
#
#   CMAKE_ARGS="-DCMAKE_TOOLCHAIN_FILE=$PWD/packaging/zig-toolchain.cmake -DZIG=/path/to/zig \
#               -DZIG_TARGET=x86_64-linux-gnu.2.17" pip wheel .
#
# ZIG: the zig executable (the `ziglang` package's, or `zig` on PATH); ZIG_TARGET: zig's -target,
# CPU-OS-ABI.glibc (default x86_64-linux-gnu.2.17, manylinux2014's glibc).

set(ZIG_TARGET "x86_64-linux-gnu.2.17" CACHE STRING "zig -target: <cpu>-linux-gnu.<glibc version>")
if(NOT ZIG)
  find_program(ZIG zig REQUIRED)
endif()
# CMake re-reads this file for each try_compile project: hand it the same choices.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES ZIG ZIG_TARGET)

set(CMAKE_CXX_COMPILER "${ZIG}" c++ -target "${ZIG_TARGET}")
string(REGEX MATCH "^[^-]+" _zig_cpu "${ZIG_TARGET}")
if(NOT _zig_cpu STREQUAL CMAKE_HOST_SYSTEM_PROCESSOR)
  # Another CPU: CMAKE_SYSTEM_PROCESSOR picks that CPU's kernels (CMakeLists.txt).
  set(CMAKE_SYSTEM_NAME Linux)
  set(CMAKE_SYSTEM_PROCESSOR "${_zig_cpu}")
endif()

# The static libc++ would export operator new/delete: bind them inside the module.
set(CMAKE_MODULE_LINKER_FLAGS_INIT "-Wl,--version-script=${CMAKE_CURRENT_LIST_DIR}/zig-exports.map")
