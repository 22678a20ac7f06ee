// SPDX-License-Identifier: Apache-2.0
// The bundle manifest rules on hostile JSON (Manifest::parse, isSemver,
// checkPolicy). A manifest that parses must survive its own round trip
// (toJson -> parse -> toJson gives the same document): mbl-update writes the
// verified manifest beside the staged payloads and reads it back after a reboot.

#include "bundle.h"
#include "fuzz_util.h"

#include <cstddef>
#include <cstdint>
#include <string>

using namespace mbl;
using fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string text(reinterpret_cast<const char*>(data), size);
    (void)bundle::isSemver(text);
    auto m = bundle::Manifest::parse(text);
    if (!m) {
        check(m.error().code == ErrorCode::InvalidArgument);
        fuzz::checkMessage(m.error());
        return 0;
    }
    check(bundle::isSemver(m->version) && !m->payloads.empty() && !m->compatible.empty());
    const nlohmann::json first = m->toJson();
    auto again = bundle::Manifest::parse(first.dump());
    check(again.ok());
    check(again->toJson() == first);
    (void)bundle::checkPolicy(*m, m->compatible.front(), m->securityVersion);
    check(bundle::checkPolicy(*m, m->compatible.front(), m->securityVersion).ok());
    return 0;
}
