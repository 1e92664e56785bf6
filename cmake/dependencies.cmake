# The libraries initless links, as targets the components use: initless::fmt, initless::spdlog,
# initless::toml, initless::seccomp, initless::crypto.
#
# Why they are linked in (INITLESS_STATIC_DEPS, default ON): every verb of the OCI runtime is a new
# process (containerd's runc shim execs `initless create`, then `initless start`; create execs the
# sandbox's init once more), and with fmt, spdlog, toml++, libseccomp, libcrypto and libstdc++ as shared
# libraries ld.so spent ~2 ms of each exec loading 10 libraries and binding ~6,600 symbols: `initless
# --version` took 3.5 ms, 1.6 ms linked in; create + start of a restored container 27 -> 20 ms
# (issue 12, DESIGN.md "The runtime's own time"). Debian ships fmt, spdlog and toml++ as shared
# libraries and headers only: their compiled halves are built here from their headers (src/deps).
# glibc stays shared (a static one cannot use NSS, and getaddrinfo is used). OFF links Debian's shared
# libraries as before.
option(INITLESS_STATIC_DEPS "link fmt, spdlog, toml++, libseccomp, libcrypto and libstdc++ into the binaries" ON)

find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(tomlplusplus REQUIRED)
find_package(OpenSSL REQUIRED)  # libcrypto: the images' HMAC-SHA256 (src/image/auth.cpp)
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBSECCOMP REQUIRED IMPORTED_TARGET libseccomp)

foreach(dep fmt spdlog toml seccomp crypto)
  add_library(initless_dep_${dep} INTERFACE)
  add_library(initless::${dep} ALIAS initless_dep_${dep})
endforeach()

if(INITLESS_STATIC_DEPS)
  # The compiled halves of fmt, spdlog and toml++; our sources include the same headers with the
  # definitions below, which declare what this library defines.
  add_library(initless_deps_impl STATIC ${PROJECT_SOURCE_DIR}/src/deps/fmt.cpp
                                        ${PROJECT_SOURCE_DIR}/src/deps/spdlog.cpp
                                        ${PROJECT_SOURCE_DIR}/src/deps/toml.cpp)
  target_compile_definitions(initless_deps_impl PUBLIC SPDLOG_COMPILED_LIB SPDLOG_FMT_EXTERNAL TOML_HEADER_ONLY=0)
  target_link_libraries(initless_deps_impl PUBLIC Threads::Threads)
  # libstdc++ and libgcc too: every executable that links a component links fmt.
  target_link_options(initless_deps_impl INTERFACE -static-libstdc++ -static-libgcc)
  foreach(dep fmt spdlog toml)
    target_link_libraries(initless_dep_${dep} INTERFACE initless_deps_impl)
  endforeach()
  find_library(LIBSECCOMP_ARCHIVE NAMES libseccomp.a REQUIRED)
  target_include_directories(initless_dep_seccomp INTERFACE ${LIBSECCOMP_INCLUDE_DIRS})
  target_link_libraries(initless_dep_seccomp INTERFACE ${LIBSECCOMP_ARCHIVE})
  find_library(LIBCRYPTO_ARCHIVE NAMES libcrypto.a REQUIRED)
  target_include_directories(initless_dep_crypto INTERFACE ${OPENSSL_INCLUDE_DIR})
  target_link_libraries(initless_dep_crypto INTERFACE ${LIBCRYPTO_ARCHIVE} ${CMAKE_DL_LIBS} Threads::Threads)
else()
  target_link_libraries(initless_dep_fmt INTERFACE fmt::fmt)
  target_link_libraries(initless_dep_spdlog INTERFACE spdlog::spdlog)
  target_link_libraries(initless_dep_toml INTERFACE tomlplusplus::tomlplusplus)
  target_link_libraries(initless_dep_seccomp INTERFACE PkgConfig::LIBSECCOMP)
  target_link_libraries(initless_dep_crypto INTERFACE OpenSSL::Crypto)
endif()
