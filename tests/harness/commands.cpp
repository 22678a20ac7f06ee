// SPDX-License-Identifier: Apache-2.0
#include "commands.h"

#include "mbl/fs.h"

#include <stdexcept>
#include <unistd.h>

namespace mbl::test {

std::string python3Path()
{
    for (const char* p : {"/usr/bin/python3", "/usr/local/bin/python3"}) {
        if (::access(p, X_OK) == 0) {
            return p;
        }
    }
    return "";
}

RunResult mustRun(const std::vector<std::string>& argv)
{
    auto r = mbl::run(argv);
    if (!r || !r->status.success()) {
        std::string cmd;
        for (const auto& a : argv) {
            cmd += a + " ";
        }
        throw std::runtime_error("command failed: " + cmd + ": " + (r ? r->err + r->out : r.error().message));
    }
    return *r;
}

std::string readOrThrow(const std::string& path)
{
    auto t = fs::readFile(path);
    if (!t) {
        throw std::runtime_error("cannot read " + path + ": " + t.error().message);
    }
    return *t;
}

} // namespace mbl::test
