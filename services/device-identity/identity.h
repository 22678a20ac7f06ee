#pragma once
// The device's identity: key, certificate chain, device id and provisioning
// data, kept in the identity state directory. No bus code here.

#include "mbl/config.h"
#include "mbl/expected.h"
#include "mbl/paths.h"

#include <cstdint>
#include <string>

namespace mbl::identity {

class Identity {
public:
    static Expected<Identity> open(const Paths& paths, const Config& config);

    const std::string& stateDir() const { return stateDir_; }
    std::string deviceId() const { return deviceId_; }
    bool provisioned() const { return provisioned_; }
    std::uint64_t certificateNotAfter() const { return notAfter_; }
    std::string keyStorage() const { return keyUri_; }
    std::string state() const { return state_; }

private:
    std::string stateDir_;
    std::string keyUri_;
    std::string deviceId_;
    bool provisioned_ = false;
    std::uint64_t notAfter_ = 0;
    std::string state_ = "ok";
};

} // namespace mbl::identity
