#pragma once
// JSON configuration files with errors that name the file and the key.

#include "mbl/expected.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace mbl {

class Config {
public:
    // A missing file yields an empty object when optional; otherwise NotFound.
    static Expected<Config> load(const std::string& path, bool optional = true);
    static Expected<Config> parse(const std::string& text, const std::string& origin);

    Config() = default;
    Config(nlohmann::json doc, std::string origin) : doc_(std::move(doc)), origin_(std::move(origin)) {}

    const nlohmann::json& json() const { return doc_; }
    const std::string& origin() const { return origin_; }

    // Typed getters: a missing key gives the fallback; a key of the wrong type is
    // an InvalidArgument error naming "<file>: key '<a.b>'". Keys may be dotted paths.
    Expected<std::string> getString(const std::string& key, const std::string& fallback) const;
    Expected<bool> getBool(const std::string& key, bool fallback) const;
    Expected<std::int64_t> getInt(const std::string& key, std::int64_t fallback, std::int64_t min,
                                  std::int64_t max) const;
    Expected<std::vector<std::string>> getStringList(const std::string& key,
                                                     const std::vector<std::string>& fallback) const;
    // Fails with InvalidArgument naming the first key not in `known`.
    Status rejectUnknownKeys(const std::vector<std::string>& known) const;

private:
    const nlohmann::json* find(const std::string& key) const;
    Error typeError(const std::string& key, const char* expected) const;

    nlohmann::json doc_ = nlohmann::json::object();
    std::string origin_;
};

} // namespace mbl
