#pragma once
// The device's attributes as the server should see them (hawkBit "controller
// attributes", DDI configData): facts of the device (id, class, client and
// firmware version, installed apps) and what apps publish under a namespace
// with SetAttributes (persisted). The whole set is sent with mode "replace",
// so the server's view equals the device's: an attribute or an app that is
// gone disappears there too. Not thread-safe: the CloudClient's lock guards it.

#include "mbl/expected.h"

#include <map>
#include <string>

namespace mbl::cloud {

class AttributeStore {
public:
    // Loads the apps' attributes from `path` (attributes.json); a missing or
    // damaged file is an empty store.
    explicit AttributeStore(std::string path);

    // Replaces one app namespace ("<ns>.<key>"); an empty map removes it. Checked
    // against hawkBit's rules for the whole set that would result, persisted
    // atomically before it takes effect; a refusal changes nothing.
    Status setNamespace(const std::string& ns, const std::map<std::string, std::string>& attrs);

    // Device facts ("device_id", "firmware_version", "app.<name>", ...): replaces
    // every fact but `fixed` ones set with setFixed. Facts the server would
    // refuse are left out (and logged once), so one odd value never blocks the rest.
    void setSystem(const std::map<std::string, std::string>& facts);
    void setFixed(const std::string& key, const std::string& value);

    // Everything, as it goes to the server.
    std::map<std::string, std::string> merged() const;

    // True when `merged()` differs from what the server acknowledged last, or
    // the server asked for the attributes.
    bool needsSending() const { return requested_ || merged() != sent_; }
    void requestSend() { requested_ = true; }
    void acknowledged(const std::map<std::string, std::string>& sent)
    {
        sent_ = sent;
        requested_ = false;
    }

private:
    std::string path_;
    std::map<std::string, std::map<std::string, std::string>> apps_;
    std::map<std::string, std::string> system_;
    std::map<std::string, std::string> fixed_;
    std::map<std::string, std::string> sent_;
    bool requested_ = true;
};

} // namespace mbl::cloud
