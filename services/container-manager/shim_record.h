// SPDX-License-Identifier: Apache-2.0
#pragma once
// The records of <runtime>/apps/shim (written by the manager and by
// mbl-container-shim): renamed into place, so never seen half-written, but not
// fsynced — they live in /run, which a power loss empties anyway (and the
// containers with it); they only have to outlive a crash of the manager.

#include "mbl/fd.h"
#include "mbl/fs.h"

#include <cstdio>
#include <fcntl.h>
#include <string>
#include <unistd.h>

namespace mbl::containers {

inline bool writeShimRecord(const std::string& path, const std::string& text)
{
    const std::string tmp = path + ".tmp";
    {
        Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
        if (!f || !fs::writeAll(f.get(), text.data(), text.size())) {
            return false;
        }
    }
    return ::rename(tmp.c_str(), path.c_str()) == 0;
}

} // namespace mbl::containers
