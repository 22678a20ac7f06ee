// SPDX-License-Identifier: Apache-2.0
#pragma once
// Where the manager and its apps live in the cgroup tree, and the removal of
// app cgroups that are no longer used.
//
// Under systemd the manager's unit has Delegate=yes: the unit's cgroup is the
// manager's to manage, and nothing outside it is. So:
//   <unit cgroup>/manager       the manager (and the shims it starts): a leaf,
//                               because cgroup v2 lets only leaves hold
//                               processes once controllers are enabled below
//                               (the "no internal processes" rule)
//   <unit cgroup>/apps/<name>   each app's container (runc's cgroupsPath)
// The unit's cgroup is the manager's own one at start-up: the "0::" line of
// /proc/self/cgroup on cgroup v2, the name=systemd line on a hybrid or legacy
// (v1) system, which is where systemd delegates.
//
// A manager started in the root cgroup (from a shell, not by a service
// manager) has no subtree of its own: its apps go to /<fallback>/<name>
// (containers.json has no say; "mbl", or "mbl-<hash>" for a test root).
//
// runc removes an app's cgroup when it deletes the container; one left by a
// crash (the container gone while the manager was not running) is removed when
// the manager starts (removeStale) and when the app is removed (removeApp).
// Only empty folders are ever removed: rmdir refuses a cgroup with processes.

#include "mbl/expected.h"

#include <string>
#include <vector>

namespace mbl::containers {

struct CgroupMount {
    std::string path; // mount point, e.g. /sys/fs/cgroup/memory
    bool v2 = false;
    bool systemd = false; // the v1 name=systemd hierarchy
};

// The cgroup hierarchies mounted here (from /proc/self/mountinfo), and the
// process's own cgroup path (from /proc/self/cgroup) as above ("/" if none).
struct CgroupSystem {
    std::vector<CgroupMount> mounts;
    std::string own = "/";

    static CgroupSystem discover();
    // From the texts of /proc/self/mountinfo and /proc/self/cgroup (tests).
    static CgroupSystem parse(const std::string& mountinfo, const std::string& procCgroup);
};

class Cgroups {
public:
    // `fallbackParent`: the apps' parent when the manager has no subtree of its own.
    Cgroups(CgroupSystem system, const std::string& fallbackParent);

    // True when the manager runs in a cgroup of its own (under a service manager).
    bool delegated() const { return delegated_; }
    // "/<unit>/apps" or "/mbl": the parent of the apps' cgroups.
    const std::string& appsParent() const { return appsParent_; }
    // runc's cgroupsPath for an app.
    std::string appPath(const std::string& app) const { return appsParent_ + "/" + app; }
    // The manager's own leaf ("/<unit>/manager"), "" when not delegated.
    const std::string& managerLeaf() const { return managerLeaf_; }

    // Moves the manager (this process, every thread) into its leaf, in the v2
    // and name=systemd hierarchies where its unit's cgroup exists. Nothing to do
    // when not delegated.
    Status enterLeaf() const;
    // Every app cgroup folder without processes under the apps' parent, and the
    // parent itself when it is then empty (fallback layout only). Returns how
    // many folders were removed.
    std::size_t removeStale() const;

private:
    CgroupSystem sys_;
    bool delegated_ = false;
    std::string appsParent_;
    std::string managerLeaf_;
};

// The cgroup at `path` ("/<unit>/apps/<app>") in every hierarchy, each empty
// folder below it first; a folder that still holds processes is left.
void removeCgroup(const std::string& path);
// The cgroup at `path` in every hierarchy if nothing is below it.
void removeCgroupIfEmpty(const std::string& path);
// The file of the cgroup at `path` in the hierarchy of the memory controller:
// `v1Name` (memory.oom_control) on cgroup v1, `v2Name` (memory.events) on v2;
// "" if there is none.
std::string memoryCgroupFile(const std::string& path, const std::string& v2Name, const std::string& v1Name);

// rmdir of `dir` after every empty folder below it (bottom-up); folders that
// hold processes (EBUSY) and what is above them stay. Returns folders removed.
std::size_t removeEmptyCgroupTree(const std::string& dir);

} // namespace mbl::containers
