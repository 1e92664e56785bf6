// Lower-case hex of bytes and back: the manifest's byte fields, digests, a seccomp filter sent to init.
// Pure functions; any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace initless::sys {

std::string hex(std::span<const uint8_t> bytes);
inline std::string hex(std::string_view bytes) {
    return hex(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}
// Throws Error for an odd length or a character that is not a hex digit (either case).
std::vector<uint8_t> unhex(std::string_view text);

}  // namespace initless::sys
