// SPDX-License-Identifier: Apache-2.0
#pragma once
// sd_notify wrappers: readiness, status text and stopping, for Type=notify units.

#include <string>

namespace mbl::notify {

void ready();
void status(const std::string& text);
void stopping();

} // namespace mbl::notify
