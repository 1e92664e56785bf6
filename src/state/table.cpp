#include "state/table.h"

#include <fcntl.h>
#include <sys/syscall.h>

#include <bit>
#include <cstring>

#include <fmt/format.h>

#include "initless/image/image.h"

namespace initless::state {

// Each op flag is its own bit (two branches once gave STUB_OP_NO_CLOCK and STUB_OP_PAUSE the same
// one, and two others STUB_OP_EXPECT_ARG3 and STUB_OP_PAUSE: an op stopped as a pause instead of
// running). A new flag goes into this list.
static_assert(std::popcount(STUB_OP_ALLOW_FAIL | STUB_OP_MOVE_FD | STUB_OP_EXPECT_ARG0 | STUB_OP_EXPECT_ARG2 |
                            STUB_OP_EXPECT_ARG3 | STUB_OP_LOAD32 | STUB_OP_STORE32 | STUB_OP_NO_CLOCK |
                            STUB_OP_PAUSE) == 9,
              "stub op flags must be distinct bits");

uint64_t page_up(uint64_t v) {
    return (v + image::kPageSize - 1) & ~(image::kPageSize - 1);
}

Region::Region(uint64_t base, size_t code_size) : base_(base), code_size_(page_up(code_size)) {}

uint64_t Region::put(const void* data, size_t len, size_t align) {
    size_t off = (data_.size() + align - 1) & ~(align - 1);
    data_.resize(off + len);
    if (data) std::memcpy(data_.data() + off, data, len);
    return base_ + code_size_ + off;
}

void Table::op(long nr, std::initializer_list<uint64_t> args, int result_slot, uint32_t flags,
               std::initializer_list<std::pair<int, int>> from_slots, std::string what) {
    stub_op o{};
    o.nr = static_cast<uint64_t>(nr);
    size_t i = 0;
    for (uint64_t a : args) o.args[i++] = a;
    for (auto [arg, slot] : from_slots) o.arg_slot |= static_cast<uint64_t>(slot + 1) << (8 * arg);
    o.result_slot = result_slot;
    o.flags = flags;
    ops_.push_back(o);
    what_.push_back(what.empty() ? fmt::format("syscall {}", nr) : std::move(what));
}

void Table::move_fd(int slot, int fd, bool cloexec, int flags) {
    op(0, {0, static_cast<uint64_t>(fd), cloexec ? static_cast<uint64_t>(O_CLOEXEC) : 0}, -1, STUB_OP_MOVE_FD,
       {{0, slot}}, fmt::format("move fd to {}", fd));
    op(SYS_fcntl, {static_cast<uint64_t>(fd), F_SETFL, static_cast<uint64_t>(flags)}, -1, STUB_OP_ALLOW_FAIL,
       {}, fmt::format("fd {} status flags", fd));
}

uint64_t Table::place(Region& r) const {
    std::vector<uint8_t> buf(sizeof(stub_table) + ops_.size() * sizeof(stub_op));
    auto* t = reinterpret_cast<stub_table*>(buf.data());
    t->count = ops_.size();
    for (auto [slot, value] : presets_) t->slots[slot] = value;
    std::memcpy(t->ops, ops_.data(), ops_.size() * sizeof(stub_op));
    return r.put(buf.data(), buf.size(), 64);
}

}  // namespace initless::state
