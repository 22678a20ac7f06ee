// SPDX-License-Identifier: Apache-2.0
// The apps' seccomp profile against podman's default profile (containers-common,
// /usr/share/containers/seccomp.json): every call podman allows without
// condition is allowed, except the ones listed here with the reason; nothing
// podman refuses is allowed.

#include "app_config.h"
#include "harness.h"

#include "mbl/fs.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <set>

using namespace mbl;
using namespace mbl::containers;
using nlohmann::json;

namespace {

// Refused by us, allowed by podman (which relies on capabilities and its
// user namespace): an app in a user namespace is root over namespaces it makes,
// so these are what would let it build a nested user namespace with full
// capabilities and reach kernel code that unprivileged users never reach.
const std::set<std::string> kStricter = {
    "clone", "clone3",                                      // filtered on their flags / ENOSYS (own rules)
    "unshare", "setns",                                     // namespaces
    "mount", "umount", "umount2", "pivot_root", "mount_setattr", "move_mount", "open_tree", // mounts
    "fsconfig", "fsmount", "fsopen", "fspick",              // the new mount API
    "keyctl",                                               // the kernel keyring
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", // other processes' memory
    "name_to_handle_at",                                    // file handles (open_by_handle_at's pair)
    "syslog", "reboot",                                     // kernel log, reboot (no capability for them anyway)
    "socketcall", "ipc",                                    // i386 multiplexers: their arguments cannot be filtered
    "syscall",                                              // the MIPS indirect call (no such arch here)
};

std::set<std::string> names(const json& rules, bool unconditional)
{
    std::set<std::string> out;
    for (const auto& r : rules) {
        if (r.at("action") != "SCMP_ACT_ALLOW") {
            continue;
        }
        const bool conditional = (r.contains("args") && !r["args"].empty() && !r["args"].is_null()) ||
                                 (r.contains("includes") && !r["includes"].empty());
        if (unconditional && conditional) {
            continue;
        }
        for (const auto& n : r.at("names")) {
            out.insert(n.get<std::string>());
        }
    }
    return out;
}

} // namespace

TEST_CASE("seccomp: the apps' profile allows what podman's default allows, less the namespace, mount, keyring and "
          "tracing calls, and allows nothing podman refuses")
{
    auto text = fs::readFile("/usr/share/containers/seccomp.json", 1u << 20);
    if (!text) {
        test::skip("podman's default profile (/usr/share/containers/seccomp.json, package golang-github-containers-common) "
                   "is not installed");
    }
    const json podman = json::parse(*text);
    const json ours = defaultSeccomp();
    CHECK(ours.at("defaultAction") == "SCMP_ACT_ERRNO");
    const auto podmanAll = names(podman.at("syscalls"), false);
    const auto podmanFree = names(podman.at("syscalls"), true);
    const auto oursAll = names(ours.at("syscalls"), false);
    const auto oursFree = names(ours.at("syscalls"), true);
    for (const auto& n : podmanFree) {
        if (kStricter.count(n) == 0) {
            INFO(n << ": podman allows it; the apps' profile must too, or kStricter names it with the reason");
            CHECK(oursFree.count(n) == 1);
        }
    }
    for (const auto& n : oursAll) {
        INFO(n << ": allowed for apps, refused by podman whatever the capabilities");
        CHECK(podmanAll.count(n) == 1);
    }
    for (const auto& n : kStricter) {
        INFO(n << ": listed as refused, yet allowed without condition");
        CHECK(oursFree.count(n) == 0);
    }
}
