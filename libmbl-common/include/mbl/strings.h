#pragma once
// Small string helpers shared by services and tools.

#include <string>
#include <vector>

namespace mbl::str {

std::vector<std::string> split(const std::string& s, char sep);
std::string trim(const std::string& s);
bool startsWith(const std::string& s, const std::string& prefix);
bool endsWith(const std::string& s, const std::string& suffix);
std::string toHex(const unsigned char* data, std::size_t len);
// A name that is safe as one path component and as an identifier:
// [A-Za-z0-9][A-Za-z0-9._-]{0,maxLen-1}, not "." or "..".
bool isSafeName(const std::string& s, std::size_t maxLen = 64);
// Text from outside (a server, a bundle) made fit to quote in a message or a log
// line: control characters become '?', and it is cut at maxLen bytes ("…" added).
std::string quotable(const std::string& s, std::size_t maxLen = 80);

} // namespace mbl::str
