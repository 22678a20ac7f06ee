// SPDX-License-Identifier: Apache-2.0
#pragma once
// Owning file descriptor: closed exactly once, movable, never copied.

#include <utility>

namespace mbl {

class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept
    {
        if (this != &o) {
            reset(std::exchange(o.fd_, -1));
        }
        return *this;
    }
    ~Fd() { reset(); }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    explicit operator bool() const { return valid(); }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1);

    // dup with O_CLOEXEC; invalid Fd if it fails (errno set).
    Fd dup() const;

private:
    int fd_ = -1;
};

} // namespace mbl
