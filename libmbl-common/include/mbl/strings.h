// SPDX-License-Identifier: Apache-2.0
#pragma once
// Small string helpers shared by services and tools.

#include <string>
#include <vector>

namespace mbl::str {

std::vector<std::string> split(const std::string& s, char sep);
// The non-empty space-separated words of `s` (a boot order, a list in a file).
std::vector<std::string> words(const std::string& s);
// `v` joined with `sep` between the entries.
std::string join(const std::vector<std::string>& v, const std::string& sep = " ");
std::string trim(const std::string& s);
bool startsWith(const std::string& s, const std::string& prefix);
bool endsWith(const std::string& s, const std::string& suffix);
std::string toHex(const unsigned char* data, std::size_t len);
// A name that is safe as one path component and as an identifier:
// [A-Za-z0-9][A-Za-z0-9._-]{0,maxLen-1}, not "." or "..".
bool isSafeName(const std::string& s, std::size_t maxLen = 64);
// Text from outside (a server, a bundle) made fit to quote in a message or a log
// line: control characters and what sanitizeUtf8 replaces become '?', and it is
// cut at maxLen bytes, never inside a character ("…" added).
std::string quotable(const std::string& s, std::size_t maxLen = 80);
// `s` as a D-Bus string may hold it: each byte that is not part of well-formed
// UTF-8, and each byte of a noncharacter (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF, which
// sd-bus refuses too), becomes '?'. Text from outside may be anything; sd-bus
// cannot build a reply or signal carrying it.
std::string sanitizeUtf8(std::string s);

} // namespace mbl::str
