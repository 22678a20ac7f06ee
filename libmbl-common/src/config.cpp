#include "mbl/config.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <algorithm>

namespace mbl {

Expected<Config> Config::parse(const std::string& text, const std::string& origin)
{
    nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
    if (doc.is_discarded()) {
        return unexpected(ErrorCode::InvalidArgument, origin + ": not valid JSON");
    }
    if (!doc.is_object()) {
        return unexpected(ErrorCode::InvalidArgument, origin + ": top level must be a JSON object");
    }
    return Config{std::move(doc), origin};
}

Expected<Config> Config::load(const std::string& path, bool optional)
{
    if (optional && !fs::exists(path)) {
        return Config{nlohmann::json::object(), path};
    }
    auto text = fs::readFile(path, 1u << 20);
    if (!text) {
        return unexpected(text.error());
    }
    return parse(*text, path);
}

const nlohmann::json* Config::find(const std::string& key) const
{
    const nlohmann::json* cur = &doc_;
    for (const auto& part : str::split(key, '.')) {
        if (!cur->is_object()) {
            return nullptr;
        }
        auto it = cur->find(part);
        if (it == cur->end()) {
            return nullptr;
        }
        cur = &*it;
    }
    return cur;
}

Error Config::typeError(const std::string& key, const char* expected) const
{
    return Error{ErrorCode::InvalidArgument, origin_ + ": key '" + key + "' must be " + expected};
}

Expected<std::string> Config::getString(const std::string& key, const std::string& fallback) const
{
    const auto* v = find(key);
    if (v == nullptr) {
        return fallback;
    }
    if (!v->is_string()) {
        return unexpected(typeError(key, "a string"));
    }
    return v->get<std::string>();
}

Expected<bool> Config::getBool(const std::string& key, bool fallback) const
{
    const auto* v = find(key);
    if (v == nullptr) {
        return fallback;
    }
    if (!v->is_boolean()) {
        return unexpected(typeError(key, "true or false"));
    }
    return v->get<bool>();
}

Expected<std::int64_t> Config::getInt(const std::string& key, std::int64_t fallback, std::int64_t min,
                                      std::int64_t max) const
{
    const auto* v = find(key);
    if (v == nullptr) {
        return fallback;
    }
    if (!v->is_number_integer()) {
        return unexpected(typeError(key, "an integer"));
    }
    auto n = v->get<std::int64_t>();
    if (n < min || n > max) {
        return unexpected(ErrorCode::InvalidArgument, origin_ + ": key '" + key + "' must be between " +
                                                          std::to_string(min) + " and " + std::to_string(max));
    }
    return n;
}

Expected<std::vector<std::string>> Config::getStringList(const std::string& key,
                                                         const std::vector<std::string>& fallback) const
{
    const auto* v = find(key);
    if (v == nullptr) {
        return fallback;
    }
    if (!v->is_array() || !std::all_of(v->begin(), v->end(), [](const auto& e) { return e.is_string(); })) {
        return unexpected(typeError(key, "a list of strings"));
    }
    return v->get<std::vector<std::string>>();
}

Status Config::rejectUnknownKeys(const std::vector<std::string>& known) const
{
    for (const auto& item : doc_.items()) {
        if (std::find(known.begin(), known.end(), item.key()) == known.end()) {
            return unexpected(ErrorCode::InvalidArgument, origin_ + ": unknown key '" + item.key() + "'");
        }
    }
    return {};
}

} // namespace mbl
