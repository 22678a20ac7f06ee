// SPDX-License-Identifier: Apache-2.0
#pragma once
// A TPM 2.0 simulator for the identity tests: swtpm in socket mode on loopback
// TCP (the tcti-swtpm of tpm2-tss 3.2 speaks TCP only: commands on `port`,
// control on `port + 1`), with a fresh state directory, so each instance has its
// own seeds, i.e. is another TPM. Started by the test, killed with it.

#include "mbl/expected.h"
#include "mbl/process.h"

#include <memory>
#include <string>

namespace mbl::test {

class Swtpm {
public:
    // Why TPM tests cannot run here ("" when swtpm and the tpm2 provider exist).
    static std::string missing();
    // Starts a new TPM with its state in `stateDir` (made if absent) and waits
    // until it accepts connections.
    static Expected<std::unique_ptr<Swtpm>> start(const std::string& stateDir);
    ~Swtpm();

    // For TPM2OPENSSL_TCTI.
    std::string tcti() const;
    std::string tctiEnv() const { return "TPM2OPENSSL_TCTI=" + tcti(); }
    int port() const { return port_; }

private:
    Swtpm() = default;
    Child child_;
    int port_ = 0;
};

} // namespace mbl::test
