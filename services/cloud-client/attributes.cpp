#include "attributes.h"

#include "ddi.h"

#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

namespace mbl::cloud {

using nlohmann::json;

namespace {

bool reserved(const std::string& ns)
{
    return ns == "mbl" || ns == "device_id" || ns == "device_class" || ns == "firmware_version" || ns == "app";
}

} // namespace

AttributeStore::AttributeStore(std::string path) : path_(std::move(path))
{
    auto text = fs::readFile(path_, 1u << 20);
    if (!text) {
        return;
    }
    json j = json::parse(*text, nullptr, false);
    if (!j.is_object()) {
        log::warning("cloud: ignoring damaged " + path_);
        return;
    }
    for (auto& [ns, kv] : j.items()) {
        if (!kv.is_object()) {
            continue;
        }
        for (auto& [k, v] : kv.items()) {
            if (v.is_string()) {
                apps_[ns][k] = v.get<std::string>();
            }
        }
    }
}

Status AttributeStore::setNamespace(const std::string& ns, const std::map<std::string, std::string>& attrs)
{
    if (!str::isSafeName(ns, 64) || reserved(ns)) {
        return unexpected(ErrorCode::InvalidArgument,
                          "namespace '" + str::quotable(ns, 64) +
                              "' is not allowed: use [A-Za-z0-9._-], at most 64 characters, and not a reserved name "
                              "(mbl, app, device_id, device_class, firmware_version)");
    }
    for (const auto& [k, v] : attrs) {
        if (auto st = validateAttribute(ns + "." + k, v); !st) {
            return unexpected(ErrorCode::InvalidArgument, "SetAttributes(" + ns + "): " + st.error().message);
        }
    }
    auto next = apps_;
    if (attrs.empty()) {
        next.erase(ns);
    } else {
        next[ns] = attrs;
    }
    auto saved = std::move(apps_);
    apps_ = next;
    if (auto st = validateAttributes(merged()); !st) {
        apps_ = std::move(saved);
        return unexpected(ErrorCode::InvalidArgument, "SetAttributes(" + ns + "): " + st.error().message);
    }
    json j = json::object();
    for (const auto& [n, kv] : apps_) {
        j[n] = kv;
    }
    if (auto st = fs::writeFileAtomic(path_, j.dump(), 0600); !st) {
        apps_ = std::move(saved);
        return st;
    }
    return {};
}

void AttributeStore::setSystem(const std::map<std::string, std::string>& facts)
{
    std::map<std::string, std::string> next;
    for (const auto& [k, v] : facts) {
        if (auto st = validateAttribute(k, v); !st) {
            if (system_.count(k) == 0) {
                log::warning("cloud: device attribute left out: " + st.error().message);
            }
            continue;
        }
        next[k] = v;
    }
    system_ = std::move(next);
}

void AttributeStore::setFixed(const std::string& key, const std::string& value)
{
    if (auto st = validateAttribute(key, value); !st) {
        log::warning("cloud: device attribute left out: " + st.error().message);
        fixed_.erase(key);
        return;
    }
    fixed_[key] = value;
}

std::map<std::string, std::string> AttributeStore::merged() const
{
    std::map<std::string, std::string> out = system_;
    for (const auto& [k, v] : fixed_) {
        out[k] = v;
    }
    for (const auto& [ns, kv] : apps_) {
        for (const auto& [k, v] : kv) {
            out[ns + "." + k] = v;
        }
    }
    return out;
}

} // namespace mbl::cloud
