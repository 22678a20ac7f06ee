// SPDX-License-Identifier: Apache-2.0
#include "layer_unpack.h"

#include "mbl/strings.h"

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace mbl::containers {

namespace {
const char kWhiteoutPrefix[] = ".wh.";
const char kOpaqueWhiteout[] = ".wh..wh..opq";

std::string joinPath(const std::vector<std::string>& c, std::size_t n)
{
    std::string out;
    for (std::size_t i = 0; i < n && i < c.size(); ++i) {
        if (!out.empty()) {
            out += '/';
        }
        out += c[i];
    }
    return out;
}

Error bad(const std::string& what, const std::string& msg)
{
    return Error{ErrorCode::InvalidArgument, what + ": " + msg};
}

// Removes everything inside the directory `dirfd` except names in `keep`.
Status clearDir(int dirfd, const std::string& relDir, const std::set<std::string>& keep)
{
    Fd dup{::fcntl(dirfd, F_DUPFD_CLOEXEC, 0)};
    if (!dup) {
        return unexpected(errnoError("dup", errno));
    }
    DIR* d = ::fdopendir(dup.get());
    if (d == nullptr) {
        return unexpected(errnoError("opendir", errno));
    }
    dup.release(); // owned by d now
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") {
            names.push_back(n);
        }
    }
    ::closedir(d);
    for (const auto& n : names) {
        std::string rel = relDir.empty() ? n : relDir + "/" + n;
        if (keep.count(rel) != 0) {
            continue;
        }
        if (auto st = removeAt(dirfd, n); !st) {
            return st;
        }
    }
    return {};
}
} // namespace

Expected<std::vector<std::string>> splitEntryPath(const std::string& nameIn)
{
    std::string name = nameIn;
    if (!name.empty() && name[0] == '/') {
        return unexpected(ErrorCode::InvalidArgument, "absolute path '" + nameIn + "' in archive");
    }
    std::vector<std::string> out;
    for (auto& c : str::split(name, '/')) {
        if (c.empty() || c == ".") {
            continue;
        }
        if (c == "..") {
            return unexpected(ErrorCode::InvalidArgument, "path '" + nameIn + "' climbs out with '..'");
        }
        out.push_back(c);
    }
    if (out.empty()) {
        return out; // the root itself
    }
    return out;
}

Status removeAt(int dirfd, const std::string& name)
{
    struct stat st {};
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) {
            return {};
        }
        return unexpected(errnoError("stat " + name, errno));
    }
    if (S_ISDIR(st.st_mode)) {
        Fd sub{::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
        if (!sub) {
            return unexpected(errnoError("open " + name, errno));
        }
        if (auto s = clearDir(sub.get(), "", {}); !s) {
            return s;
        }
        if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
            return unexpected(errnoError("rmdir " + name, errno));
        }
        return {};
    }
    if (::unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) {
        return unexpected(errnoError("unlink " + name, errno));
    }
    return {};
}

Expected<RootfsWriter> RootfsWriter::open(const std::string& root, const UnpackLimits& limits)
{
    RootfsWriter w;
    w.root_ = Fd{::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    if (!w.root_) {
        return unexpected(errnoError("open " + root, errno));
    }
    w.limits_ = limits;
    return w;
}

Expected<Fd> RootfsWriter::openParent(const std::vector<std::string>& components, bool create,
                                      const std::string& what)
{
    Fd cur = root_.dup();
    if (!cur) {
        return unexpected(errnoError("dup", errno));
    }
    for (std::size_t i = 0; i + 1 < components.size(); ++i) {
        const std::string& c = components[i];
        Fd next{::openat(cur.get(), c.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
        if (!next && errno == ENOENT && create) {
            if (::mkdirat(cur.get(), c.c_str(), 0755) != 0 && errno != EEXIST) {
                return unexpected(errnoError(what + ": mkdir " + joinPath(components, i + 1), errno));
            }
            thisLayer_.insert(joinPath(components, i + 1));
            next = Fd{::openat(cur.get(), c.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
        }
        if (!next) {
            int e = errno;
            if (e == ELOOP || e == ENOTDIR) {
                struct stat st {};
                if (::fstatat(cur.get(), c.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
                    return unexpected(bad(what, "entry '" + joinPath(components, components.size()) +
                                                    "' goes through the symlink '" + joinPath(components, i + 1) +
                                                    "' (refused: it could lead outside the root)"));
                }
                return unexpected(bad(what, "'" + joinPath(components, i + 1) + "' is not a directory"));
            }
            if (e == ENOENT) {
                return unexpected(Error{ErrorCode::NotFound, what + ": '" + joinPath(components, i + 1) + "' does not exist"});
            }
            return unexpected(errnoError(what + ": open " + joinPath(components, i + 1), e));
        }
        cur = std::move(next);
    }
    return cur;
}

Status RootfsWriter::writeRegular(struct archive* reader, int parent, const std::string& leaf, mode_t mode,
                                  const std::string& what)
{
    Fd out{::openat(parent, leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0777)};
    if (!out) {
        return unexpected(errnoError(what + ": create " + leaf, errno));
    }
    const void* buf = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    la_int64_t end = 0;
    while (true) {
        int r = archive_read_data_block(reader, &buf, &size, &offset);
        if (r == ARCHIVE_EOF) {
            break;
        }
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            return unexpected(bad(what, std::string("truncated or corrupt archive: ") + archiveErrorString(reader)));
        }
        used_ += size;
        if (used_ > limits_.quotaBytes) {
            return unexpected(Error{ErrorCode::NoSpace, what + ": the app is larger than the install quota of " +
                                                            std::to_string(limits_.quotaBytes) + " bytes"});
        }
        const char* p = static_cast<const char*>(buf);
        size_t left = size;
        off_t at = static_cast<off_t>(offset);
        while (left > 0) {
            ssize_t n = ::pwrite(out.get(), p, left, at);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return unexpected(errnoError(what + ": write " + leaf, errno));
            }
            p += n;
            at += n;
            left -= static_cast<size_t>(n);
        }
        end = offset + static_cast<la_int64_t>(size);
    }
    // Sparse files end with a hole: the size must still be right.
    if (::ftruncate(out.get(), static_cast<off_t>(end)) != 0) {
        return unexpected(errnoError(what + ": truncate " + leaf, errno));
    }
    return {};
}

Status RootfsWriter::unpackEntry(struct archive* reader, struct archive_entry* entry, const std::string& name,
                                 const std::string& what)
{
    auto parts = splitEntryPath(name);
    if (!parts) {
        return unexpected(bad(what, parts.error().message));
    }
    const mode_t type = archive_entry_filetype(entry);
    if (parts->empty()) {
        return {}; // "./": the root itself
    }
    const std::string rel = joinPath(*parts, parts->size());
    std::string leaf = parts->back();

    // Whiteouts: remove what lower layers made; never create anything.
    if (limits_.applyWhiteouts && str::startsWith(leaf, kWhiteoutPrefix)) {
        auto parent = openParent(*parts, false, what);
        if (!parent) {
            if (parent.error().code == ErrorCode::NotFound) {
                return {};
            }
            return unexpected(parent.error());
        }
        const std::string dirRel = joinPath(*parts, parts->size() - 1);
        if (leaf == kOpaqueWhiteout) {
            return clearDir(parent->get(), dirRel, thisLayer_);
        }
        const std::string target = leaf.substr(sizeof(kWhiteoutPrefix) - 1);
        if (target.empty() || target == "." || target == "..") {
            return unexpected(bad(what, "invalid whiteout '" + name + "'"));
        }
        return removeAt(parent->get(), target);
    }

    if (type == AE_IFCHR || type == AE_IFBLK) {
        return unexpected(bad(what, "device node '" + name + "' refused (apps get no device nodes from images)"));
    }
    if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK && type != AE_IFIFO &&
        archive_entry_hardlink(entry) == nullptr) {
        return unexpected(bad(what, "unsupported entry type for '" + name + "'"));
    }

    auto parentFd = openParent(*parts, true, what);
    if (!parentFd) {
        return unexpected(parentFd.error());
    }
    const int parent = parentFd->get();
    thisLayer_.insert(rel);

    mode_t perm = archive_entry_perm(entry) & 07777;
    if (!limits_.allowSetuid && (perm & (S_ISUID | S_ISGID)) != 0 && type != AE_IFDIR) {
        perm &= ~static_cast<mode_t>(S_ISUID | S_ISGID);
        if (setuidDropped_++ < 5) {
            setuidExamples_.push_back("/" + rel);
        }
    }

    struct stat existing {};
    const bool exists = ::fstatat(parent, leaf.c_str(), &existing, AT_SYMLINK_NOFOLLOW) == 0;

    if (type == AE_IFDIR && archive_entry_hardlink(entry) == nullptr) {
        if (exists && !S_ISDIR(existing.st_mode)) {
            if (auto st = removeAt(parent, leaf); !st) {
                return st;
            }
        }
        if (!exists || !S_ISDIR(existing.st_mode)) {
            if (::mkdirat(parent, leaf.c_str(), 0700) != 0) {
                return unexpected(errnoError(what + ": mkdir " + rel, errno));
            }
        }
        Fd dir{::openat(parent, leaf.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
        if (!dir) {
            return unexpected(errnoError(what + ": open " + rel, errno));
        }
        if (::fchown(dir.get(), static_cast<uid_t>(archive_entry_uid(entry)),
                     static_cast<gid_t>(archive_entry_gid(entry))) != 0 ||
            ::fchmod(dir.get(), perm & ~static_cast<mode_t>(S_ISUID)) != 0) {
            return unexpected(errnoError(what + ": set owner/mode of " + rel, errno));
        }
        return {};
    }

    // Anything else replaces what was there.
    if (exists) {
        if (auto st = removeAt(parent, leaf); !st) {
            return st;
        }
    }

    if (const char* link = archive_entry_hardlink(entry)) {
        auto target = splitEntryPath(link);
        if (!target || target->empty()) {
            return unexpected(bad(what, "hardlink '" + name + "' points outside the root ('" + link + "')"));
        }
        auto targetParent = openParent(*target, false, what);
        if (!targetParent) {
            return unexpected(bad(what, "hardlink '" + name + "' -> '" + link + "': " + targetParent.error().message));
        }
        struct stat tst {};
        if (::fstatat(targetParent->get(), target->back().c_str(), &tst, AT_SYMLINK_NOFOLLOW) != 0) {
            return unexpected(bad(what, "hardlink '" + name + "' -> '" + link + "': target not in the archive"));
        }
        if (!S_ISREG(tst.st_mode)) {
            return unexpected(bad(what, "hardlink '" + name + "' -> '" + link + "': target is not a regular file"));
        }
        if (::linkat(targetParent->get(), target->back().c_str(), parent, leaf.c_str(), 0) != 0) {
            return unexpected(errnoError(what + ": link " + rel, errno));
        }
        return {};
    }

    if (type == AE_IFLNK) {
        const char* target = archive_entry_symlink(entry);
        if (target == nullptr) {
            return unexpected(bad(what, "symlink '" + name + "' without a target"));
        }
        // The target is stored as it is: it is only ever followed inside the
        // container, and never while unpacking (every lookup is O_NOFOLLOW).
        if (::symlinkat(target, parent, leaf.c_str()) != 0) {
            return unexpected(errnoError(what + ": symlink " + rel, errno));
        }
        if (::fchownat(parent, leaf.c_str(), static_cast<uid_t>(archive_entry_uid(entry)),
                       static_cast<gid_t>(archive_entry_gid(entry)), AT_SYMLINK_NOFOLLOW) != 0) {
            return unexpected(errnoError(what + ": chown " + rel, errno));
        }
        return {};
    }

    if (type == AE_IFIFO) {
        if (::mkfifoat(parent, leaf.c_str(), perm & 0777) != 0) {
            return unexpected(errnoError(what + ": mkfifo " + rel, errno));
        }
        return {};
    }

    if (auto st = writeRegular(reader, parent, leaf, perm, what); !st) {
        return st;
    }
    Fd f{::openat(parent, leaf.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)};
    if (!f) {
        return unexpected(errnoError(what + ": open " + rel, errno));
    }
    // chown first: it clears setuid bits, which fchmod then sets only when allowed.
    if (::fchown(f.get(), static_cast<uid_t>(archive_entry_uid(entry)), static_cast<gid_t>(archive_entry_gid(entry))) !=
            0 ||
        ::fchmod(f.get(), perm) != 0) {
        return unexpected(errnoError(what + ": set owner/mode of " + rel, errno));
    }
    struct timespec times[2] = {{archive_entry_mtime(entry), 0}, {archive_entry_mtime(entry), 0}};
    (void)::futimens(f.get(), times);
    return {};
}

Status RootfsWriter::unpackLayer(struct archive* reader, const std::string& what)
{
    beginLayer();
    struct archive_entry* entry = nullptr;
    while (true) {
        int r = archive_read_next_header(reader, &entry);
        if (r == ARCHIVE_EOF) {
            return {};
        }
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            return unexpected(bad(what, std::string("truncated or corrupt archive: ") + archiveErrorString(reader)));
        }
        const char* p = archive_entry_pathname(entry);
        if (p == nullptr) {
            return unexpected(bad(what, "entry without a name"));
        }
        if (limits_.cancel != nullptr && limits_.cancel->load()) {
            return unexpected(ErrorCode::Cancelled, "the install was stopped (the daemon is stopping)");
        }
        if (auto st = unpackEntry(reader, entry, p, what); !st) {
            return st;
        }
    }
}

} // namespace mbl::containers

namespace mbl::containers {
Expected<std::string> readFileUnder(const std::string& root, const std::string& rel, std::size_t maxBytes)
{
    auto parts = splitEntryPath(rel);
    if (!parts || parts->empty()) {
        return unexpected(ErrorCode::InvalidArgument, "bad path " + rel);
    }
    Fd cur{::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    for (std::size_t i = 0; cur && i + 1 < parts->size(); ++i) {
        cur = Fd{::openat(cur.get(), (*parts)[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
    }
    if (!cur) {
        return unexpected(ErrorCode::NotFound, rel + " not found in the rootfs");
    }
    Fd f{::openat(cur.get(), parts->back().c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)};
    if (!f) {
        return unexpected(ErrorCode::NotFound, rel + " not found in the rootfs");
    }
    std::string out;
    char buf[8192];
    while (out.size() <= maxBytes) {
        ssize_t n = ::read(f.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        out.append(buf, static_cast<std::size_t>(n));
    }
    if (out.size() > maxBytes) {
        return unexpected(ErrorCode::InvalidArgument, rel + " is too large");
    }
    return out;
}
} // namespace mbl::containers
