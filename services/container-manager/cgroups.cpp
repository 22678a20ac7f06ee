// SPDX-License-Identifier: Apache-2.0
#include "cgroups.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mbl::containers {

namespace {

bool isDir(const std::string& p)
{
    struct stat st {};
    return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> subdirs(const std::string& dir)
{
    std::vector<std::string> out;
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
        return out;
    }
    while (dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n != "." && n != ".." && e->d_type == DT_DIR) {
            out.push_back(n);
        }
    }
    ::closedir(d);
    return out;
}

std::string clean(std::string p)
{
    while (p.size() > 1 && p.back() == '/') {
        p.pop_back();
    }
    return p.empty() ? "/" : p;
}

std::string join(const std::string& a, const std::string& b)
{
    if (a == "/") {
        return b.empty() || b[0] != '/' ? "/" + b : b;
    }
    return a + (b.empty() || b[0] != '/' ? "/" : "") + b;
}

} // namespace

CgroupSystem CgroupSystem::parse(const std::string& mountinfo, const std::string& procCgroup)
{
    CgroupSystem s;
    for (const auto& line : str::split(mountinfo, '\n')) {
        // "id parent maj:min root mountpoint opts [optional...] - fstype source superopts"
        const auto dash = line.find(" - ");
        if (dash == std::string::npos) {
            continue;
        }
        const auto left = str::split(line.substr(0, dash), ' ');
        const auto right = str::split(line.substr(dash + 3), ' ');
        if (left.size() < 5 || right.size() < 3 || left[3] != "/") {
            continue; // a bind of a sub-tree: its paths are not the hierarchy's
        }
        CgroupMount m;
        m.path = left[4];
        if (right[0] == "cgroup2") {
            m.v2 = true;
        } else if (right[0] == "cgroup") {
            for (const auto& o : str::split(right[2], ',')) {
                if (o == "name=systemd") {
                    m.systemd = true;
                }
            }
        } else {
            continue;
        }
        s.mounts.push_back(m);
    }
    std::string v2Path;
    std::string systemdPath;
    bool v1Lines = false;
    for (const auto& line : str::split(procCgroup, '\n')) {
        const auto a = line.find(':');
        const auto b = a == std::string::npos ? a : line.find(':', a + 1);
        if (b == std::string::npos) {
            continue;
        }
        const std::string id = line.substr(0, a);
        const std::string ctrls = line.substr(a + 1, b - a - 1);
        const std::string path = line.substr(b + 1);
        if (id == "0" && ctrls.empty()) {
            v2Path = path;
        } else {
            v1Lines = true;
            for (const auto& c : str::split(ctrls, ',')) {
                if (c == "name=systemd") {
                    systemdPath = path;
                }
            }
        }
    }
    // systemd delegates the unit's cgroup: on v2 the one hierarchy, on a hybrid
    // or legacy system the name=systemd one (which it manages).
    std::string own = v1Lines ? systemdPath : v2Path;
    if (own.empty()) {
        own = v2Path;
    }
    s.own = clean(own.empty() ? "/" : own);
    return s;
}

CgroupSystem CgroupSystem::discover()
{
    auto mi = fs::readFile("/proc/self/mountinfo", 4u << 20);
    auto cg = fs::readFile("/proc/self/cgroup", 1u << 20);
    return parse(mi ? *mi : "", cg ? *cg : "");
}

Cgroups::Cgroups(CgroupSystem system, const std::string& fallbackParent) : sys_(std::move(system))
{
    delegated_ = sys_.own != "/";
    if (delegated_) {
        // Restarted inside its own leaf (it moved there before): the unit is above it.
        std::string unit = sys_.own;
        if (str::endsWith(unit, "/manager")) {
            unit = clean(unit.substr(0, unit.size() - 8));
        }
        appsParent_ = join(unit, "apps");
        managerLeaf_ = join(unit, "manager");
    } else {
        appsParent_ = "/" + fallbackParent;
    }
}

Status Cgroups::enterLeaf() const
{
    if (!delegated_) {
        return {};
    }
    const std::string unit = managerLeaf_.substr(0, managerLeaf_.size() - 8);
    const std::string pid = std::to_string(::getpid()) + "\n";
    for (const auto& m : sys_.mounts) {
        // Only where systemd keeps the unit (v2, name=systemd): a v1 controller's
        // new cgroup may not take processes at all (cpuset: no CPUs yet, ENOSPC),
        // and there the manager's place does not matter.
        if ((!m.v2 && !m.systemd) || !isDir(join(m.path, unit))) {
            continue;
        }
        const std::string leaf = join(m.path, managerLeaf_);
        if (::mkdir(leaf.c_str(), 0755) != 0 && errno != EEXIST) {
            return unexpected(errnoError("cannot make the manager's cgroup " + leaf, errno));
        }
        Fd fd{::open((leaf + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC)};
        if (!fd || !fs::writeAll(fd.get(), pid.data(), pid.size())) { // every thread moves with it
            return unexpected(errnoError("cannot move the manager into " + leaf, errno));
        }
    }
    return {};
}

std::size_t Cgroups::removeStale() const
{
    std::size_t n = 0;
    for (const auto& m : sys_.mounts) {
        const std::string parent = join(m.path, appsParent_);
        for (const auto& app : subdirs(parent)) {
            n += removeEmptyCgroupTree(parent + "/" + app);
        }
    }
    if (!delegated_) {
        removeCgroupIfEmpty(appsParent_); // <unit>/apps goes with the unit
    }
    return n;
}

void removeCgroup(const std::string& path)
{
    for (const auto& m : CgroupSystem::discover().mounts) {
        (void)removeEmptyCgroupTree(join(m.path, path));
    }
}

void removeCgroupIfEmpty(const std::string& path)
{
    for (const auto& m : CgroupSystem::discover().mounts) {
        const std::string dir = join(m.path, path);
        if (subdirs(dir).empty()) {
            (void)::rmdir(dir.c_str());
        }
    }
}

std::string memoryCgroupFile(const std::string& path, const std::string& v2Name, const std::string& v1Name)
{
    const auto mounts = CgroupSystem::discover().mounts;
    for (const auto& m : mounts) {
        if (!m.v2 && !m.systemd && fs::exists(join(m.path, "memory.oom_control"))) {
            return join(m.path, path) + "/" + v1Name;
        }
    }
    for (const auto& m : mounts) {
        if (m.v2) {
            return join(m.path, path) + "/" + v2Name;
        }
    }
    return "";
}

std::size_t removeEmptyCgroupTree(const std::string& dir)
{
    if (!isDir(dir)) {
        return 0;
    }
    std::size_t n = 0;
    for (const auto& sub : subdirs(dir)) {
        n += removeEmptyCgroupTree(dir + "/" + sub);
    }
    if (::rmdir(dir.c_str()) == 0) {
        ++n;
    }
    return n;
}

} // namespace mbl::containers
