// SPDX-License-Identifier: Apache-2.0
#pragma once
// Test images for the container manager, made by tools independent of the
// manager: python3's tarfile (tests/containers/make_image.py, also for hostile
// archives), umoci (OCI image layouts from a busybox rootfs) and skopeo
// (oci-archive). Every helper throws std::runtime_error with the tool's output
// when a tool fails.

#include "commands.h"
#include "harness.h"

#include "mbl/fs.h"
#include "mbl/process.h"

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>
#include <vector>

namespace mbl::test {

// make_image.py SPEC OUT
inline std::string makeArchive(const std::string& dir, const std::string& name, const nlohmann::json& spec)
{
    const std::string specPath = dir + "/" + name + ".spec.json";
    const std::string out = dir + "/" + name + ".tar";
    (void)fs::writeFileAtomic(specPath, spec.dump());
    mustRun({"python3", sourceRoot() + "/tests/containers/make_image.py", specPath, out});
    return out;
}

inline bool haveTool(const std::string& tool)
{
    auto r = mbl::run({"sh", "-c", "command -v " + tool});
    return r && r->status.success();
}

inline const char* kBusyboxApplets[] = {"sh", "echo", "cat", "grep", "sleep", "true", "false", "tail", "touch",
                                        "ls", "id", "dd", "head", "cp", "rm", "mkdir", "test", "env", "wc", "kill",
                                        "nc", "wget", "ip", "nslookup"};

// An OCI image layout made by umoci: an empty image, a busybox rootfs, the given
// command. Returns the layout directory.
// extraFiles: (host file, path in the rootfs) copied in, e.g. a static test helper.
inline std::string umociBusyboxImage(const std::string& dir, const std::string& layout, const std::string& tag,
                                     const std::vector<std::string>& cmd, const std::string& version = "",
                                     const std::vector<std::pair<std::string, std::string>>& extraFiles = {})
{
    if (!haveTool("umoci") || !fs::exists("/bin/busybox")) {
        skip("umoci and busybox-static are needed to build test images (tests/setup.sh installs them)");
    }
    const std::string l = dir + "/" + layout;
    const std::string b = dir + "/bundle-" + layout + "-" + tag;
    if (!fs::exists(l)) {
        mustRun({"umoci", "init", "--layout", l});
    }
    mustRun({"umoci", "new", "--image", l + ":" + tag});
    mustRun({"umoci", "unpack", "--image", l + ":" + tag, b});
    (void)fs::makeDirs(b + "/rootfs/bin");
    (void)fs::makeDirs(b + "/rootfs/etc");
    mustRun({"cp", "/bin/busybox", b + "/rootfs/bin/busybox"});
    for (const char* a : kBusyboxApplets) {
        mustRun({"ln", "-sf", "busybox", b + "/rootfs/bin/" + a});
    }
    (void)fs::writeFileAtomic(b + "/rootfs/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n");
    (void)fs::writeFileAtomic(b + "/rootfs/etc/group", "root:x:0:\napp:x:1000:\n");
    for (const auto& [from, to] : extraFiles) {
        mustRun({"cp", "-a", from, b + "/rootfs/" + to});
    }
    mustRun({"umoci", "repack", "--image", l + ":" + tag, b});
    std::vector<std::string> cfg = {"umoci", "config", "--image", l + ":" + tag};
    for (const auto& c : cmd) {
        cfg.push_back("--config.cmd=" + c);
    }
    if (!version.empty()) {
        cfg.push_back("--config.label=org.opencontainers.image.version=" + version);
    }
    mustRun(cfg);
    (void)fs::removeTree(b);
    return l;
}

// The layout as an archive: with skopeo (oci-archive) when asked, else tar.
inline std::string layoutArchive(const std::string& layout, const std::string& tag, const std::string& out,
                                 bool useSkopeo)
{
    if (useSkopeo) {
        if (!haveTool("skopeo")) {
            skip("skopeo is needed (tests/setup.sh installs it)");
        }
        (void)fs::removeTree(out);
        mustRun({"skopeo", "copy", "--quiet", "oci:" + layout + ":" + tag, "oci-archive:" + out + ":" + tag});
    } else {
        mustRun({"tar", "-C", layout, "-cf", out, "."});
    }
    return out;
}

} // namespace mbl::test
