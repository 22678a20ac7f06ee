// SPDX-License-Identifier: Apache-2.0
#include "mbl/fs.h"

#include "mbl/fd.h"

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

namespace mbl::fs {

std::string dirName(const std::string& path)
{
    auto pos = path.find_last_of('/');
    if (pos == std::string::npos) {
        return ".";
    }
    if (pos == 0) {
        return "/";
    }
    return path.substr(0, pos);
}

Status syncDir(const std::string& dir)
{
    Fd d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    if (!d) {
        return unexpected(errnoError("open directory " + dir, errno));
    }
    if (::fsync(d.get()) != 0) {
        return unexpected(errnoError("fsync directory " + dir, errno));
    }
    return {};
}

Status syncFileSystem(const std::string& path)
{
    Fd d{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (!d) {
        return unexpected(errnoError("open " + path, errno));
    }
    if (::syncfs(d.get()) != 0) {
        return unexpected(errnoError("syncfs of the file system of " + path, errno));
    }
    return {};
}

Status writeAll(int fd, const void* data, std::size_t len)
{
    const auto* p = static_cast<const char*>(data);
    while (len > 0) {
        ssize_t n = ::write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return unexpected(errnoError("write", errno));
        }
        p += n;
        len -= static_cast<std::size_t>(n);
    }
    return {};
}

Status writeFileAtomic(const std::string& path, const std::string& data, mode_t mode)
{
    const std::string dir = dirName(path);
    std::random_device rd;
    const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd() & 0xffffff);
    Fd fd{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)};
    if (!fd) {
        return unexpected(errnoError("create " + tmp, errno));
    }
    auto fail = [&](const Error& e) {
        ::unlink(tmp.c_str());
        return unexpected(e);
    };
    // The umask may have narrowed the mode; the caller's mode is what is meant.
    if (::fchmod(fd.get(), mode) != 0) {
        return fail(errnoError("chmod " + tmp, errno));
    }
    if (auto st = writeAll(fd.get(), data.data(), data.size()); !st) {
        return fail(Error{st.error().code, "write " + tmp + ": " + st.error().message});
    }
    if (::fsync(fd.get()) != 0) {
        return fail(errnoError("fsync " + tmp, errno));
    }
    fd.reset();
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        return fail(errnoError("rename " + tmp + " to " + path, errno));
    }
    return syncDir(dir);
}

Expected<std::string> readAll(int fd, std::uint64_t maxBytes)
{
    std::string out;
    char buf[65536];
    while (true) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return unexpected(errnoError("read", errno));
        }
        if (n == 0) {
            break;
        }
        if (out.size() + static_cast<std::uint64_t>(n) > maxBytes) {
            return unexpected(ErrorCode::InvalidArgument,
                              "input larger than the limit of " + std::to_string(maxBytes) + " bytes");
        }
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

Expected<std::string> readFile(const std::string& path, std::uint64_t maxBytes)
{
    Fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (!fd) {
        return unexpected(errnoError("open " + path, errno));
    }
    auto r = readAll(fd.get(), maxBytes);
    if (!r) {
        return unexpected(r.error().code, path + ": " + r.error().message);
    }
    return r;
}

Status makeDirs(const std::string& path, mode_t mode)
{
    if (path.empty()) {
        return {};
    }
    std::string cur;
    std::size_t pos = 0;
    while (pos != std::string::npos) {
        pos = path.find('/', pos + 1);
        cur = path.substr(0, pos);
        if (cur.empty()) {
            continue;
        }
        if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) {
            return unexpected(errnoError("mkdir " + cur, errno));
        }
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        return unexpected(ErrorCode::Io, path + " exists and is not a directory");
    }
    return {};
}

namespace {
Status removeAt(int dirfd, const char* name, const std::string& shown)
{
    struct stat st {};
    if (::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return errno == ENOENT ? Status{} : Status{unexpected(errnoError("stat " + shown, errno))};
    }
    if (S_ISDIR(st.st_mode)) {
        int sub = ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            return unexpected(errnoError("open " + shown, errno));
        }
        DIR* d = ::fdopendir(sub);
        if (d == nullptr) {
            ::close(sub);
            return unexpected(errnoError("opendir " + shown, errno));
        }
        Status result;
        while (struct dirent* e = ::readdir(d)) {
            if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) {
                continue;
            }
            auto st2 = removeAt(::dirfd(d), e->d_name, shown + "/" + e->d_name);
            if (!st2 && result) {
                result = st2;
            }
        }
        ::closedir(d);
        if (!result) {
            return result;
        }
        if (::unlinkat(dirfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
            return unexpected(errnoError("rmdir " + shown, errno));
        }
        return {};
    }
    if (::unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) {
        return unexpected(errnoError("unlink " + shown, errno));
    }
    return {};
}
} // namespace

Status removeTree(const std::string& path)
{
    return removeAt(AT_FDCWD, path.c_str(), path);
}

bool exists(const std::string& path)
{
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

} // namespace mbl::fs
