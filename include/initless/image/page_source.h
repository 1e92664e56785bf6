// Where the bytes of an image's pages.img come from when something reads them page by page (the
// lazy strategy's page server): a local file, or a remote page server (pages/remote.h). The page
// server reads through this interface only and does not know which one it has.
//
// Threads: one caller at a time (the page server's thread; a remote source also takes its own
// lock, so the restore's setup may read through it before the server does).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "initless/sys/error.h"
#include "initless/sys/unique_fd.h"

namespace initless::image {

// The pages cannot be had (a remote server died, timed out, or sent pages that fail their digest).
// Final: a source that failed once fails every later read with the same message.
class PageSourceFailed : public Error {
  public:
    using Error::Error;
};

class PageSource {
  public:
    virtual ~PageSource() = default;
    // The bytes [offset, offset + len) of pages.img (zeros past its end), valid until the next
    // call. A local source never blocks on anything but the disk; a remote one blocks at most its
    // timeout. Throws PageSourceFailed.
    virtual const uint8_t* read(uint64_t offset, uint64_t len) = 0;
    // The bytes [offset, offset + len) when they are in memory that stays valid while the source
    // lives and that any thread may read (a local file's mapping); null otherwise (a remote source,
    // a range past the file's end). Never blocks, never throws.
    virtual const uint8_t* mapped(uint64_t /*offset*/, uint64_t /*len*/) const { return nullptr; }
    // A hint: [offset, offset + len) is read soon. A local file starts reading what of it is not in
    // the page cache (one request for the range, not a fault per page); cheap when it is all there.
    // Never throws.
    virtual void will_read(uint64_t /*offset*/, uint64_t /*len*/) {}
    // For messages: "pages.img of /img" or "page server 10.0.0.1:7000".
    virtual std::string describe() const = 0;
};

// pages.img open as `pages` (load's verified file), read through a read-only mapping: the page
// cache itself, one copy per page served. `will_read` asks for the range (POSIX_FADV_WILLNEED): a
// fault on a page already being read waits for that read instead of starting the device's read-around
// (8 MiB on this VM's disk, ~18 ms cold) around it.
std::shared_ptr<PageSource> local_page_source(sys::UniqueFd pages, std::string name);

}  // namespace initless::image
