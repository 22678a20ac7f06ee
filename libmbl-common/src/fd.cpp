// SPDX-License-Identifier: Apache-2.0
#include "mbl/fd.h"

#include <fcntl.h>
#include <unistd.h>

namespace mbl {

void Fd::reset(int fd)
{
    if (fd_ >= 0 && fd_ != fd) {
        ::close(fd_);
    }
    fd_ = fd;
}

Fd Fd::dup() const
{
    if (fd_ < 0) {
        return Fd{};
    }
    return Fd{::fcntl(fd_, F_DUPFD_CLOEXEC, 3)};
}

} // namespace mbl
