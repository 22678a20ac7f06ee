// SPDX-License-Identifier: Apache-2.0
#pragma once
// Small helpers the fixtures that run real programs (nginx, openssl, the Python
// test servers) share. Failures throw std::runtime_error naming what failed.

#include "mbl/process.h"

#include <string>
#include <vector>

namespace mbl::test {

// The python3 interpreter's path, "" when none is installed.
std::string python3Path();
// Runs argv to completion and returns what it printed; throws naming the command
// and its output when it fails.
RunResult mustRun(const std::vector<std::string>& argv);
// The whole file; throws naming the path and why when it cannot be read.
std::string readOrThrow(const std::string& path);

} // namespace mbl::test
