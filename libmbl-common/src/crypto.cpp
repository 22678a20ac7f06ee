// SPDX-License-Identifier: Apache-2.0
#include "mbl/crypto.h"

#include "mbl/strings.h"

#include <openssl/err.h>

#include <cerrno>
#include <memory>
#include <stdexcept>
#include <unistd.h>

namespace mbl::crypto {

std::string lastOpenSslError()
{
    std::string out;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) {
            out += "; ";
        }
        out += buf;
    }
    return out.empty() ? "unknown OpenSSL error" : out;
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new())
{
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) {
        throw std::runtime_error("EVP SHA-256 init failed");
    }
}

void Sha256::update(const void* data, std::size_t len)
{
    EVP_DigestUpdate(ctx_.get(), data, len);
}

std::array<unsigned char, 32> Sha256::finish()
{
    std::array<unsigned char, 32> out{};
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_.get(), out.data(), &len);
    return out;
}

std::string Sha256::finishHex()
{
    auto d = finish();
    return str::toHex(d.data(), d.size());
}

std::string sha256Hex(const std::string& data)
{
    Sha256 h;
    h.update(data.data(), data.size());
    return h.finishHex();
}

Expected<std::pair<std::string, std::uint64_t>> sha256HexOfFd(int fd)
{
    Sha256 h;
    std::uint64_t total = 0;
    // On the heap for the call only: a thread_local array is a static TLS block
    // that glibc zeroes (so makes resident) in every thread of every daemon.
    constexpr std::size_t kBuf = 1 << 16;
    std::unique_ptr<char[]> buf(new char[kBuf]);
    while (true) {
        ssize_t n = ::read(fd, buf.get(), kBuf);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return unexpected(errnoError("read", errno));
        }
        if (n == 0) {
            break;
        }
        h.update(buf.get(), static_cast<std::size_t>(n));
        total += static_cast<std::uint64_t>(n);
    }
    return std::make_pair(h.finishHex(), total);
}

} // namespace mbl::crypto
