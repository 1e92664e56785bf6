#include "initless/sys/error.h"

#include <cstring>

namespace initless::sys {

SysError::SysError(const std::string& what, int err) : Error(what + ": " + std::strerror(err)), code_(err) {}

}  // namespace initless::sys
