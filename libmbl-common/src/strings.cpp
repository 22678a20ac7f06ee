#include "mbl/strings.h"

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

std::string quotable(const std::string& s, std::size_t maxLen)
{
    std::string out = s.substr(0, maxLen);
    for (auto& ch : out) {
        const auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c == 0x7f) {
            ch = '?';
        }
    }
    if (s.size() > maxLen) {
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
