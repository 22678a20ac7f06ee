// SPDX-License-Identifier: Apache-2.0
#include "grubenv.h"

#include "mbl/fd.h"
#include "mbl/fs.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace mbl::update::grubenv {

namespace {

// The order the variables are written in: the boot script's first.
int rank(const std::string& name)
{
    if (name == "BOOT_ORDER") {
        return 0;
    }
    if (name.rfind("BOOT_", 0) == 0) {
        return 1;
    }
    if (name.rfind("MBL_", 0) == 0) {
        return 2;
    }
    return 3;
}

bool stop(const StepHook& hook, const char* step)
{
    return hook && !hook(step);
}

Unexpected stopped(const char* step)
{
    return unexpected(ErrorCode::Cancelled, std::string("grubenv write stopped before ") + step);
}

} // namespace

Expected<std::string> render(const std::map<std::string, std::string>& vars, std::size_t size)
{
    if (size < kBlockSize || size % kBlockSize != 0) {
        return unexpected(ErrorCode::InvalidArgument,
                          "a GRUB environment block is a multiple of " + std::to_string(kBlockSize) + " bytes");
    }
    std::vector<std::pair<std::string, std::string>> ordered(vars.begin(), vars.end());
    std::stable_sort(ordered.begin(), ordered.end(),
                     [](const auto& a, const auto& b) { return rank(a.first) < rank(b.first); });
    std::string out = kSignature;
    for (const auto& [name, value] : ordered) {
        // GRUB's envblk: a name ends at '='; a line starting with '#' is a comment.
        if (name.empty() || name[0] == '#' || name.find_first_of("=\n\\") != std::string::npos) {
            return unexpected(ErrorCode::InvalidArgument, "'" + name + "' cannot be a GRUB environment variable");
        }
        out += name + "=";
        for (char c : value) {
            if (c == '\\' || c == '\n') {
                out += '\\';
            }
            out += c;
        }
        out += '\n';
    }
    if (out.size() > size) {
        return unexpected(ErrorCode::NoSpace, "the GRUB environment needs " + std::to_string(out.size()) +
                                                  " bytes, more than its block of " + std::to_string(size));
    }
    out.append(size - out.size(), '#');
    return out;
}

bool isValidBlock(const std::string& data)
{
    const std::size_t sig = std::strlen(kSignature);
    return data.size() >= kBlockSize && data.size() % kBlockSize == 0 && data.compare(0, sig, kSignature) == 0;
}

Status write(const std::string& path, const std::map<std::string, std::string>& vars, const StepHook& hook)
{
    // The block as it is: its size is kept when it is a valid one.
    std::string current;
    bool valid = false;
    {
        Fd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (in) {
            struct stat st{};
            if (::fstat(in.get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= (1 << 20)) {
                auto data = fs::readAll(in.get(), 1u << 20);
                valid = data && isValidBlock(*data);
                if (valid) {
                    current = std::move(*data);
                }
            }
        } else if (errno != ENOENT) {
            return unexpected(errnoError("open " + path, errno));
        }
    }
    auto block = render(vars, valid ? current.size() : kBlockSize);
    if (!block) {
        return unexpected(block.error());
    }
    if (valid) {
        if (*block == current) {
            return {};
        }
        if (stop(hook, "open")) {
            return stopped("open");
        }
        // In place: no O_TRUNC, same size, the file's blocks kept.
        Fd out(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!out) {
            return unexpected(errnoError("open " + path, errno));
        }
        if (stop(hook, "write")) {
            return stopped("write");
        }
        std::size_t done = 0;
        while (done < block->size()) {
            const ssize_t n = ::pwrite(out.get(), block->data() + done, block->size() - done, static_cast<off_t>(done));
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                return unexpected(errnoError("write " + path, n < 0 ? errno : EIO));
            }
            done += static_cast<std::size_t>(n);
        }
        if (stop(hook, "sync")) {
            return stopped("sync");
        }
        if (::fdatasync(out.get()) != 0) {
            return unexpected(errnoError("fdatasync " + path, errno));
        }
        return {};
    }
    // No valid block to write over: a whole new file, renamed over the path.
    if (stop(hook, "create-tmp")) {
        return stopped("create-tmp");
    }
    std::random_device rd;
    const std::string tmp = path + ".new." + std::to_string(::getpid()) + "." + std::to_string(rd() & 0xffffff);
    {
        Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
        if (!out) {
            return unexpected(errnoError("create " + tmp, errno));
        }
        auto st = fs::writeAll(out.get(), block->data(), block->size());
        if (st && ::fsync(out.get()) != 0) {
            st = unexpected(errnoError("fsync " + tmp, errno));
        }
        if (!st) {
            ::unlink(tmp.c_str());
            return st;
        }
    }
    if (stop(hook, "rename")) {
        return stopped("rename");
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        return unexpected(errnoError("rename " + tmp + " to " + path, err));
    }
    if (stop(hook, "sync-dir")) {
        return stopped("sync-dir");
    }
    return fs::syncDir(fs::dirName(path));
}

} // namespace mbl::update::grubenv
