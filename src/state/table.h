// The restore's syscall tables, built on the controller's side and run by the stub
// (src/restore/stub.c) inside the restored process: a Region is the stub's memory image (code, then
// tables and the data they point at, then stacks), a Table one sequence of ops. Every kind of state
// (src/state/<kind>.cpp) appends its ops to a process's Table. Plain data, no syscalls: any thread.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "initless/restore/stub_abi.h"

namespace initless::state {

// Slots of a main table: values ops leave for later ops (an fd just created, a pid).
enum Slot : int {
    kTmp = 0,    // the fd being created
    kImg = 1,    // pages.img
    kLog = 2,    // a copy of the instance's log
    kFile = 3,   // a mapped file while it is mapped
    kPipeR = 4,  // end 0 of a pair being created
    kPipeW = 5,  // end 1 of a pair being created
    kExe = 6,    // the executable, for PR_SET_MM_MAP
    kTgid = 7,
    kSelfTid = 8,
    kUffd = 9,        // the process's userfaultfd while its VMAs are registered (the lazy strategy)
    kUffdDevice = 10  // /dev/userfaultfd, which makes kUffd (the lazy strategy)
};
constexpr int kShmFirst = 16;  // slots of shared memory objects' memfds from here on

uint64_t page_up(uint64_t v);

// The stub region's contents, built on our side: code, then tables and data, then stacks.
class Region {
  public:
    Region(uint64_t base, size_t code_size);

    // Reserves `len` bytes of data (copied from `data` unless null), returns its address in the target.
    uint64_t put(const void* data, size_t len, size_t align = 8);
    template <typename T>
    uint64_t put(const T& v) {
        return put(&v, sizeof v);
    }
    uint64_t put_string(const std::string& s) { return put(s.c_str(), s.size() + 1, 1); }
    uint64_t data_size() const { return data_.size(); }
    const std::vector<uint8_t>& data() const { return data_; }
    uint64_t code_size() const { return code_size_; }

  private:
    uint64_t base_;
    uint64_t code_size_;
    std::vector<uint8_t> data_;
};

// A table of ops under construction (lives inside the region once placed).
class Table {
  public:
    // A raw syscall `nr` (or a pseudo-op with `flags`); `from_slots` takes {argument, slot} pairs
    // whose argument is the slot's value when the op runs; `what` names the op in errors.
    void op(long nr, std::initializer_list<uint64_t> args, int result_slot = -1, uint32_t flags = 0,
            std::initializer_list<std::pair<int, int>> from_slots = {}, std::string what = {});
    // Moves the fd in `slot` to number `fd` with its close-on-exec flag and status flags.
    void move_fd(int slot, int fd, bool cloexec, int flags);
    // A slot's value when the table starts (an fd number the process inherits).
    void preset(int slot, uint64_t value) { presets_.push_back({slot, value}); }
    // Writes the table into the region; returns its address.
    uint64_t place(Region& r) const;
    size_t size() const { return ops_.size(); }
    const std::string& what(size_t i) const { return what_.at(i); }
    // Whether op `i` is a STUB_OP_PAUSE (the table stops there and goes on when resumed).
    bool pauses_at(size_t i) const { return i < ops_.size() && (ops_[i].flags & STUB_OP_PAUSE); }

  private:
    std::vector<stub_op> ops_;
    std::vector<std::string> what_;
    std::vector<std::pair<int, uint64_t>> presets_;
};

}  // namespace initless::state
