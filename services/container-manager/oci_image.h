// SPDX-License-Identifier: Apache-2.0
#pragma once
// Reading an app archive into a staging directory: either an OCI image layout
// archive (oci-layout, index.json, blobs/sha256/...; every blob's digest and
// size checked, layers applied in order) or an OCI runtime bundle archive
// (config.json + rootfs/). The result is a rootfs and the process the image
// asks for; the runtime config.json is generated later from it (oci_spec.h).

#include "layer_unpack.h"

#include "mbl/expected.h"

#include <atomic>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mbl::containers {

// What the image says about the process to run.
struct ImageProcess {
    std::vector<std::string> args; // entrypoint + cmd
    std::vector<std::string> env;  // KEY=VALUE
    std::string cwd = "/";
    std::string user;              // as written in the image ("1000:1000", "app", "")
};

struct StagedImage {
    std::string kind; // "oci-image" or "oci-bundle"
    ImageProcess process;
    std::string refName;        // org.opencontainers.image.ref.name of the chosen manifest
    std::string version;        // org.opencontainers.image.version (annotation or label), may be ""
    std::string manifestDigest; // "sha256:..." ("" for bundles)
    std::string title;          // org.opencontainers.image.title (annotation or label), may be ""
    std::uint64_t rootfsBytes = 0;
    // What the image asked for and does not get (setuid bits dropped, a runtime
    // bundle's privileges, exposed ports, volumes), one sentence each.
    std::vector<std::string> withheld;
};

struct StageOptions {
    UnpackLimits limits;
    // Selects one manifest of an index with several (matches ref.name); "" for none.
    std::string imageRef;
    // A read of the archive that brings nothing for this long ends with Timeout (0: no limit).
    int readTimeoutMs = 0;
};

// Reads the archive from `fd` (any readable fd: file or pipe) into
// `stagingDir` (which must exist and be empty): <stagingDir>/rootfs and
// temporary blobs. Errors: InvalidArgument (malformed, digest mismatch,
// unknown media type, hostile entries), NoSpace (quota).
Expected<StagedImage> stageArchive(int fd, const std::string& stagingDir, const StageOptions& opts);

// Resolves an image "user" string to uid/gid with the rootfs's /etc/passwd and /etc/group.
Expected<std::pair<std::uint32_t, std::uint32_t>> resolveUser(const std::string& rootfs, const std::string& user);

} // namespace mbl::containers
