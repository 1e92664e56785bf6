#include "initless/image/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>

#include <fmt/format.h>

#include "initless/sys/file.h"

namespace initless::image {

namespace {
std::string to_hex(const unsigned char* p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    std::string out(2 * n, '0');
    for (size_t i = 0; i < n; ++i) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    return out;
}
}  // namespace

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

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1)
        throw Error("libcrypto: SHA-256 unavailable");
}

Sha256::~Sha256() {
    EVP_MD_CTX_free(ctx_);
}

void Sha256::update(const void* data, size_t len) {
    if (len && EVP_DigestUpdate(ctx_, data, len) != 1) throw Error("libcrypto: SHA-256 update failed");
}

std::string Sha256::hex() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (EVP_DigestFinal_ex(ctx_, out, &len) != 1) throw Error("libcrypto: SHA-256 final failed");
    return to_hex(out, len);
}

std::string Sha256::bytes() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (EVP_DigestFinal_ex(ctx_, out, &len) != 1) throw Error("libcrypto: SHA-256 final failed");
    return std::string(reinterpret_cast<const char*>(out), len);
}

std::string hmac_sha256_hex(const Key& key, std::string_view data) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(Key::kSize),
              reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len))
        throw Error("libcrypto: HMAC-SHA256 failed");
    return to_hex(out, len);
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
