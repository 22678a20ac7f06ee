// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the container manager's install worker does with an app archive, for
// the OCI harnesses: stage it into an empty directory (stageArchive), resolve
// the image's user against its own /etc/passwd, and generate the runtime
// config.json. Anything written outside the staging directory is a finding.

#include "app_config.h"
#include "fuzz_util.h"
#include "oci_image.h"

#include "mbl/fs.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cstring>
#include <string>

namespace mbl::fuzz {

// <scratch>/box holds only <scratch>/box/stage: a canary for entries that escape.
inline void checkNothingBeside(const std::string& box)
{
    DIR* d = ::opendir(box.c_str());
    check(d != nullptr);
    while (struct dirent* e = ::readdir(d)) {
        check(std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0 ||
              std::strcmp(e->d_name, "stage") == 0);
    }
    ::closedir(d);
}

inline void stageAndConvert(const std::string& archive)
{
    static const std::string box = scratchDir() + "/box";
    static const std::string stage = box + "/stage";
    (void)::mkdir(box.c_str(), 0755);
    check(::mkdir(stage.c_str(), 0700) == 0);
    Fd fd = memfdWith(archive);

    containers::StageOptions opts;
    // Small enough to keep a run cheap, large enough for any input libFuzzer makes.
    opts.limits.quotaBytes = 8u << 20;
    // Half the inputs select a manifest by ref.name (the install option "image").
    if (archive.size() % 2 == 1) {
        opts.imageRef = "v1";
    }
    auto img = containers::stageArchive(fd.get(), stage, opts);
    if (!img) {
        // The install fails with this error (InstallCompleted, the operation's state).
        checkMessage(img.error());
    } else {
        trace("staged " + img->kind + " " + img->manifestDigest + " user '" + img->process.user + "'");
        check(img->kind == "oci-image" || img->kind == "oci-bundle");
        check(img->manifestDigest.empty() || img->manifestDigest.size() == 71);
        auto ids = containers::resolveUser(stage + "/rootfs", img->process.user);
        if (!ids) {
            checkMessage(ids.error());
        }
        containers::AppSettings settings;
        settings.name = "fuzz";
        settings.version = "1";
        containers::SpecInputs in;
        in.process = img->process;
        in.uid = ids ? ids->first : 0;
        in.gid = ids ? ids->second : 0;
        in.dataDir = "/var/lib/mbl/apps/fuzz/data";
        in.cgroupsPath = "/mbl/fuzz";
        // Written as config.json for runc: it must serialise.
        (void)containers::generateSpec(settings, in).dump(2);
    }
    checkNothingBeside(box);
    check(fs::removeTree(stage).ok());
}

} // namespace mbl::fuzz
