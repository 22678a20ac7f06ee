// SPDX-License-Identifier: Apache-2.0
#pragma once
// Helpers shared by the libFuzzer harnesses: the fuzz input as a readable fd
// (the way the daemons get bundles and app archives), tar checksums repaired so
// that mutations reach the header fields, and a scratch directory per process.

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "mbl/error.h"
#include "mbl/fd.h"

namespace mbl::fuzz {

// A property the callers rely on; a violation is a finding (libFuzzer reports the abort).
inline void check(bool ok)
{
    if (!ok) {
        std::abort();
    }
}

// UTF-8 as sd-bus checks it for every D-Bus string (a message with anything
// else cannot be built, so the reply or signal is lost): no overlong forms, no
// surrogates, nothing above U+10FFFF, and no noncharacters (U+FDD0..U+FDEF,
// U+xFFFE, U+xFFFF), which sd-bus refuses too.
inline bool validUtf8(const std::string& s)
{
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    for (std::size_t i = 0; i < n;) {
        const unsigned c = p[i];
        std::size_t len = 0;
        unsigned cp = 0;
        if (c < 0x80) {
            ++i;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n) {
            return false;
        }
        for (std::size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        const unsigned min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0xfdd0 && cp <= 0xfdef) ||
            (cp & 0xfffe) == 0xfffe) {
            return false;
        }
        i += len;
    }
    return true;
}

// MBL_FUZZ_VERBOSE=1 prints what happened to each input (to see why seeds are refused).
inline void trace(const std::string& what)
{
    static const bool on = std::getenv("MBL_FUZZ_VERBOSE") != nullptr;
    if (on) {
        std::fprintf(stderr, "fuzz: %s\n", what.c_str());
    }
}

// Error messages end up in D-Bus replies and properties (which must be UTF-8)
// and in log lines.
// MBL_FUZZ_TEXT=0 turns the check off, to look for other findings while one
// of this kind is still open.
inline void checkMessage(const Error& e)
{
    static const bool on = [] {
        const char* v = std::getenv("MBL_FUZZ_TEXT");
        return v == nullptr || std::strcmp(v, "0") != 0;
    }();
    trace("refused: " + e.describe());
    check(!on || validUtf8(e.message));
}

// An in-memory file holding `data`, positioned at its start (reads like a pipe
// that ends, without a writer thread).
inline Fd memfdWith(const std::string& data)
{
    Fd fd{::memfd_create("fuzz-input", MFD_CLOEXEC)};
    if (!fd) {
        std::perror("memfd_create");
        std::abort();
    }
    std::size_t done = 0;
    while (done < data.size()) {
        const ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
        if (n <= 0) {
            std::perror("write memfd");
            std::abort();
        }
        done += static_cast<std::size_t>(n);
    }
    if (::lseek(fd.get(), 0, SEEK_SET) != 0) {
        std::abort();
    }
    return fd;
}

// True for a gzip, zstd, bzip2 or xz stream: left as it is (its tar is inside).
inline bool looksCompressed(const std::string& d)
{
    auto starts = [&](const char* magic, std::size_t n) { return d.size() >= n && std::memcmp(d.data(), magic, n) == 0; };
    return starts("\x1f\x8b", 2) || starts("\x28\xb5\x2f\xfd", 4) || starts("BZh", 3) || starts("\xfd" "7zXZ", 5);
}

// Walks `t` as a tar stream (header, ceil(size/512) data blocks, next header)
// and rewrites each header's checksum. A random mutation of a header field
// would otherwise only ever test libarchive's "Damaged tar archive" check.
inline void fixTarChecksums(std::string& t)
{
    std::size_t off = 0;
    while (off + 512 <= t.size()) {
        auto* h = reinterpret_cast<unsigned char*>(&t[off]);
        bool zero = true;
        for (std::size_t i = 0; i < 512 && zero; ++i) {
            zero = h[i] == 0;
        }
        if (zero) {
            return;
        }
        std::memset(h + 148, ' ', 8);
        unsigned sum = 0;
        for (std::size_t i = 0; i < 512; ++i) {
            sum += h[i];
        }
        char field[8];
        std::snprintf(field, sizeof field, "%06o", sum & 0777777u);
        std::memcpy(h + 148, field, 6);
        h[154] = 0;
        h[155] = ' ';
        // Size: octal, or GNU base-256 when the top bit is set.
        std::uint64_t size = 0;
        if ((h[124] & 0x80) != 0) {
            for (std::size_t i = 125; i < 136; ++i) {
                size = (size << 8) | h[i];
            }
        } else {
            for (std::size_t i = 124; i < 136 && h[i] >= '0' && h[i] <= '7'; ++i) {
                size = size * 8 + static_cast<std::uint64_t>(h[i] - '0');
            }
            // Leading spaces are allowed before the digits.
            if (size == 0) {
                std::size_t i = 124;
                while (i < 136 && h[i] == ' ') {
                    ++i;
                }
                for (; i < 136 && h[i] >= '0' && h[i] <= '7'; ++i) {
                    size = size * 8 + static_cast<std::uint64_t>(h[i] - '0');
                }
            }
        }
        if (size > t.size()) {
            return;
        }
        off += 512 + ((size + 511) / 512) * 512;
    }
}

// A directory for this process's scratch files, made once (MBL_FUZZ_TMP or /tmp).
inline const std::string& scratchDir()
{
    static const std::string dir = [] {
        const char* base = std::getenv("MBL_FUZZ_TMP");
        std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/mbl-fuzz-XXXXXX";
        if (::mkdtemp(tmpl.data()) == nullptr) {
            std::perror("mkdtemp");
            std::abort();
        }
        return tmpl;
    }();
    return dir;
}

} // namespace mbl::fuzz
