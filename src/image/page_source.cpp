#include "initless/image/page_source.h"

#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <vector>

#include "initless/sys/file.h"

namespace initless::image {

namespace {

class LocalPageSource : public PageSource {
  public:
    LocalPageSource(sys::UniqueFd pages, std::string name)
        : pages_(std::move(pages)), name_(std::move(name)) {
        struct stat st {};
        sys::check(::fstat(pages_.get(), &st), "page source: fstat pages.img");
        mapped_.emplace(pages_.get(), static_cast<size_t>(st.st_size));
    }
    void will_read(uint64_t offset, uint64_t len) override { sys::read_ahead(pages_.get(), offset, len); }
    const uint8_t* read(uint64_t offset, uint64_t len) override {
        if (offset + len <= mapped_->size()) return mapped_->data() + offset;
        // Past the mapping (a file shorter than the manifest says): zeros where the file ends.
        buffer_.assign(len, 0);
        ssize_t got = ::pread(pages_.get(), buffer_.data(), len, static_cast<off_t>(offset));
        if (got < 0) throw PageSourceFailed(fmt_error(errno));
        return buffer_.data();
    }
    const uint8_t* mapped(uint64_t offset, uint64_t len) const override {
        return offset + len <= mapped_->size() ? mapped_->data() + offset : nullptr;
    }
    std::string describe() const override { return name_; }

  private:
    std::string fmt_error(int err) const { return sys::SysError("read " + name_, err).what(); }
    sys::UniqueFd pages_;
    std::string name_;
    std::optional<sys::FileMapping> mapped_;
    std::vector<uint8_t> buffer_;
};

}  // namespace

std::shared_ptr<PageSource> local_page_source(sys::UniqueFd pages, std::string name) {
    return std::make_shared<LocalPageSource>(std::move(pages), std::move(name));
}

}  // namespace initless::image
