// Error convention for all of initless: failures throw. `Error` carries a message with context
// ("snapshot examples/x: open pages.img: No such file"); `SysError` adds the errno of the failing
// syscall. Callers add context with `Error::wrap`. The CLI catches at the top and prints one line.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

namespace initless {

class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// The function breaks the init-less contract (thrown while its state is read at checkpoint): the
// message names the process, the fd or mapping, and the rule broken. checkpoint::ContractError.
class ContractError : public Error {
  public:
    using Error::Error;
};

namespace sys {

class SysError : public Error {
  public:
    SysError(const std::string& what, int err);
    int code() const noexcept { return code_; }

  private:
    int code_;
};

// Throws SysError(what, errno) when `result` is -1; returns `result` otherwise.
template <typename T>
T check(T result, const std::string& what) {
    if (result == static_cast<T>(-1)) throw SysError(what, errno);
    return result;
}

// Retries a syscall wrapper while it fails with EINTR.
template <typename F>
auto retry_eintr(F&& f) {
    for (;;) {
        auto r = f();
        if (r != -1 || errno != EINTR) return r;
    }
}

}  // namespace sys
}  // namespace initless
