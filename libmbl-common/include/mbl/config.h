#pragma once
// Configuration files, read through one schema-checked reader: every value is
// read with a typed getter that names the file, the key path and what was
// expected, and the reader records each key path the service read, so that a
// final rejectUnreadKeys() refuses any key present that no getter asked for
// (a misspelled or unknown key, at any depth: `slots[1].devcie`, `poll.default_slep`).

#include "mbl/expected.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <set>
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

    // The whole document. Reading it this way records nothing: prefer the getters.
    const nlohmann::json& json() const { return doc_; }
    const std::string& origin() const { return origin_; }

    // Typed getters. A key path is dotted, with [N] for a list element
    // ("bootloader.type", "slots[1].device"). A missing key gives the fallback; a
    // key of the wrong type or out of range is an InvalidArgument error naming
    // "<file>: key '<path>'" and what was expected. Each records the path as read.
    Expected<std::string> getString(const std::string& key, const std::string& fallback) const;
    // One of `allowed` (e.g. bootloader.type: file, uboot, grub).
    Expected<std::string> getEnum(const std::string& key, const std::string& fallback,
                                  const std::vector<std::string>& allowed) const;
    Expected<bool> getBool(const std::string& key, bool fallback) const;
    Expected<std::int64_t> getInt(const std::string& key, std::int64_t fallback, std::int64_t min,
                                  std::int64_t max) const;
    Expected<std::vector<std::string>> getStringList(const std::string& key,
                                                     const std::vector<std::string>& fallback) const;
    // The number of elements of a list of objects (0 when missing), whose
    // members are then read as "<key>[i].<member>".
    Expected<std::size_t> getListSize(const std::string& key) const;
    // An object taken as a whole (its members are not checked here, e.g. a
    // document handed to another component); absent gives the fallback.
    Expected<nlohmann::json> getObject(const std::string& key, const nlohmann::json& fallback) const;
    bool has(const std::string& key) const;

    // InvalidArgument naming the first key present in the file that no getter
    // read: "<file>: unknown key 'slots[1].devcie' (expected one of: bootname,
    // device, name, size)". Call it once every value was read, before acting.
    Status rejectUnreadKeys() const;
    // Fails with InvalidArgument naming the first top-level key not in `known`.
    Status rejectUnknownKeys(const std::vector<std::string>& known) const;

private:
    const nlohmann::json* find(const std::string& key) const;
    // Records a read of `key` (and, as traversed, each of its prefixes).
    void record(const std::string& key, bool whole) const;
    Error typeError(const std::string& key, const std::string& expected) const;

    nlohmann::json doc_ = nlohmann::json::object();
    std::string origin_;
    // What the getters asked for. Mutable: reading is const; a Config is read by
    // one thread at start-up.
    mutable std::set<std::string> read_;    // paths read as a value (or taken whole)
    mutable std::set<std::string> touched_; // every prefix of a read path
};

} // namespace mbl
