// Image authentication (format 4; DESIGN.md, "Image format": the decision and the threat model).
// Every file of an image that a restore reads is listed in the image's AUTH file with its SHA-256
// digest, and the list carries an HMAC-SHA256 under a key of the state dir:
//   initless-image-auth 1
//   format 4
//   manifest.json sha256 <hex>
//   pages.idx sha256 <hex>
//   pages.img pages-sha256 <hex>     (the file size, then the saved runs in pages.idx order; every
//                                     byte outside the runs must read as zero: checked at load)
//   rootfs-upper tree-sha256 <hex>   (every entry: path, type, mode, owner, mtime, size or link
//                                     target, contents; names sorted: sys::TreeVisitor's order)
//   tmpfs-tmp tree-sha256 <hex>, tmpfs-shm tree-sha256 <hex>, workingset.idx sha256 <hex>
//   pages.sums sha256 <hex>          (per-block digests of pages.img, for remote restores)
//   hmac-sha256 <hex of HMAC(key, every line above)>
// `image::load` checks the list's MAC and the small files' digests always, pages.img and the trees
// once per load (verify_pages); a tree is checked again as it is copied into a sandbox, from the
// bytes copied. A failure throws NotAuthenticated naming the image and the file.
//
// The key: <state dir>/image.key, 32 random bytes, mode 0600, created atomically at first use
// (sys::read_or_create_secret). Thread-safe: all functions are pure or open their own fds.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "initless/sys/error.h"
#include "initless/sys/tree.h"

struct SHA256state_st;

namespace initless::image {

// An image that fails its authentication: changed, truncated, corrupted, or made with another key.
// Nothing from it is trusted (not even which function it names), so no one boots from it either.
class NotAuthenticated : public Error {
  public:
    using Error::Error;
};

class Key {
  public:
    static constexpr size_t kSize = 32;
    // The key of a state dir (made on first use): the daemon's --state, or the CLI's
    // $INITLESS_STATE_DIR (default /run/initless). The dir is made if missing.
    static Key of_state_dir(const std::filesystem::path& state_dir);
    static Key from_bytes(std::string_view bytes);  // exactly kSize bytes
    const uint8_t* data() const { return bytes_.data(); }

  private:
    std::array<uint8_t, kSize> bytes_{};
};

// Streaming SHA-256: libcrypto's SHA-256 itself, not its EVP interface, whose first use in a process
// loads the default provider and names its ~800 algorithms (1.2 ms here, once per runtime verb).
class Sha256 {
  public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;
    void update(const void* data, size_t len);
    void update(std::string_view s) { update(s.data(), s.size()); }
    std::string hex();    // finishes: lower-case hex of the 32-byte digest
    std::string bytes();  // finishes: the 32-byte digest itself

  private:
    SHA256state_st* ctx_;
};

// HMAC-SHA256 (RFC 2104) over Sha256.
std::string hmac_sha256_hex(const Key& key, std::string_view data);
// Constant-time equality of two digests in hex.
bool same_digest(std::string_view a, std::string_view b);

// The tree digest of AUTH's tree-sha256 lines, fed by a walk or a copy (sys::copy_tree_at).
class TreeDigest : public sys::TreeVisitor {
  public:
    void entry(const std::string& path, const struct stat& st, std::string_view link) override;
    void data(std::string_view chunk) override { sha_.update(chunk); }
    std::string hex() { return sha_.hex(); }

  private:
    Sha256 sha_;
};

}  // namespace initless::image
