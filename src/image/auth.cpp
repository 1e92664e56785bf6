#include "initless/image/auth.h"

// SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, which costs a provider
// load per process (auth.h); they remain the same code underneath.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cstring>

#include <fmt/format.h>

#include "initless/sys/file.h"
#include "initless/sys/hex.h"

namespace initless::image {

Key Key::of_state_dir(const std::filesystem::path& state_dir) {
    std::filesystem::create_directories(state_dir);
    return from_bytes(sys::read_or_create_secret(state_dir / "image.key", kSize));
}

Key Key::from_bytes(std::string_view bytes) {
    if (bytes.size() != kSize)
        throw Error(fmt::format("an image key has {} bytes, not {}", bytes.size(), kSize));
    Key k;
    std::memcpy(k.bytes_.data(), bytes.data(), kSize);
    return k;
}

Sha256::Sha256() : ctx_(new SHA256_CTX) {
    SHA256_Init(ctx_);
}

Sha256::~Sha256() {
    delete ctx_;
}

void Sha256::update(const void* data, size_t len) {
    if (len) SHA256_Update(ctx_, data, len);
}

std::string Sha256::hex() {
    return sys::hex(bytes());
}

std::string Sha256::bytes() {
    unsigned char out[SHA256_DIGEST_LENGTH];
    SHA256_Final(out, ctx_);
    return std::string(reinterpret_cast<const char*>(out), sizeof out);
}

std::string hmac_sha256_hex(const Key& key, std::string_view data) {
    // H((K ^ opad) || H((K ^ ipad) || data)), K zero-padded to SHA-256's 64-byte block.
    constexpr size_t kBlock = 64;
    static_assert(Key::kSize <= kBlock);
    std::array<unsigned char, kBlock> inner_pad{}, outer_pad{};
    for (size_t i = 0; i < kBlock; ++i) {
        unsigned char k = i < Key::kSize ? key.data()[i] : 0;
        inner_pad[i] = k ^ 0x36;
        outer_pad[i] = k ^ 0x5c;
    }
    Sha256 inner;
    inner.update(inner_pad.data(), kBlock);
    inner.update(data);
    std::string inner_digest = inner.bytes();
    Sha256 outer;
    outer.update(outer_pad.data(), kBlock);
    outer.update(inner_digest);
    return outer.hex();
}

bool same_digest(std::string_view a, std::string_view b) {
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void TreeDigest::entry(const std::string& path, const struct stat& st, std::string_view link) {
    // Unambiguous: the path and the link target are length-prefixed, a file's contents follow its
    // entry and are exactly `size` bytes (the copy checks that). atime is left out (reads change it).
    std::string line = fmt::format("{}:{}\n{:o} {} {} {}.{:09} {} {}\n{}:{}\n", path.size(), path, st.st_mode,
                                   st.st_uid, st.st_gid, st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                                   S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0,
                                   static_cast<uint64_t>(st.st_rdev), link.size(), link);
    sha_.update(line);
}

}  // namespace initless::image
