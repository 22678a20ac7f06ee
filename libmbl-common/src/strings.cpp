// SPDX-License-Identifier: Apache-2.0
#include "mbl/strings.h"

#include <algorithm>
#include <utility>

namespace mbl::str {

std::vector<std::string> split(const std::string& s, char sep)
{
    std::vector<std::string> out;
    std::string::size_type start = 0;
    while (true) {
        auto pos = s.find(sep, start);
        out.push_back(s.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
        if (pos == std::string::npos) {
            break;
        }
        start = pos + 1;
    }
    return out;
}

std::vector<std::string> words(const std::string& s)
{
    std::vector<std::string> out;
    for (auto& w : split(s, ' ')) {
        if (!w.empty()) {
            out.push_back(std::move(w));
        }
    }
    return out;
}

std::string join(const std::vector<std::string>& v, const std::string& sep)
{
    std::string out;
    for (std::size_t i = 0; i < v.size(); ++i) {
        out += (i == 0 ? "" : sep) + v[i];
    }
    return out;
}

std::string trim(const std::string& s)
{
    const char* ws = " \t\r\n";
    auto b = s.find_first_not_of(ws);
    if (b == std::string::npos) {
        return {};
    }
    auto e = s.find_last_not_of(ws);
    return s.substr(b, e - b + 1);
}

bool startsWith(const std::string& s, const std::string& prefix)
{
    return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

bool endsWith(const std::string& s, const std::string& suffix)
{
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string toHex(const unsigned char* data, std::size_t len)
{
    static const char* digits = "0123456789abcdef";
    std::string out;
    out.reserve(len * 2);
    for (std::size_t i = 0; i < len; ++i) {
        out.push_back(digits[data[i] >> 4]);
        out.push_back(digits[data[i] & 0xf]);
    }
    return out;
}

namespace {

// Length of the character at s[i] if it is well-formed UTF-8 that D-Bus takes
// (Unicode table 3-7, minus the noncharacters), else 0.
std::size_t charLength(const std::string& s, std::size_t i)
{
    const auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned c = at(i);
    if (c < 0x80) {
        return 1;
    }
    std::size_t len = 0;
    unsigned cp = 0;
    unsigned lo = 0x80;
    unsigned hi = 0xbf; // allowed range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (i + len > s.size() || at(i + 1) < lo || at(i + 1) > hi) {
        return 0;
    }
    for (std::size_t k = 1; k < len; ++k) {
        if ((at(i + k) & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (at(i + k) & 0x3f);
    }
    if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) == 0xfffe) {
        return 0;
    }
    return len;
}

} // namespace

std::string sanitizeUtf8(std::string s)
{
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = charLength(s, i);
        if (n == 0) {
            s[i++] = '?';
        } else {
            i += n;
        }
    }
    return s;
}

std::string quotable(const std::string& s, std::size_t maxLen)
{
    std::string out;
    std::size_t i = 0;
    while (i < s.size()) {
        const std::size_t n = charLength(s, i);
        if (out.size() + std::max<std::size_t>(n, 1) > maxLen) {
            break;
        }
        const auto c = static_cast<unsigned char>(s[i]);
        if (n == 0 || c < 0x20 || c == 0x7f) {
            out += '?';
            ++i;
        } else {
            out.append(s, i, n);
            i += n;
        }
    }
    if (i < s.size()) {
        out += "\u2026";
    }
    return out;
}

bool isSafeName(const std::string& s, std::size_t maxLen)
{
    if (s.empty() || s.size() > maxLen || s == "." || s == "..") {
        return false;
    }
    auto alnum = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    };
    if (!alnum(s[0])) {
        return false;
    }
    for (char c : s) {
        if (!alnum(c) && c != '.' && c != '_' && c != '-') {
            return false;
        }
    }
    return true;
}

} // namespace mbl::str
