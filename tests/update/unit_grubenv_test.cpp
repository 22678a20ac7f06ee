// SPDX-License-Identifier: Apache-2.0
// The GRUB environment block as the update service writes it (grubenv.h): read
// back by the real grub-editenv (GRUB's own envblk code, as the boot loader's
// load_env reads it), and never left unreadable by a writer killed at any step
// or a power cut at any byte of the write.

#include "update_fixture.h"

#include "bootloader.h"
#include "grubenv.h"
#include "harness.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>

#include <map>
#include <optional>
#include <sys/stat.h>

using namespace mbl;
using namespace mbl::test::update;
namespace grubenv = mbl::update::grubenv;

namespace {

using Vars = std::map<std::string, std::string>;

// What the real grub-editenv lists; nullopt when it cannot read the block
// (what GRUB's load_env refuses too: both are grub-core/lib/envblk.c).
std::optional<Vars> grubList(const std::string& path)
{
    auto r = mustRun({"grub-editenv", path, "list"});
    if (!r.status.success()) {
        return std::nullopt;
    }
    Vars out;
    for (const auto& line : str::split(r.out, '\n')) {
        if (auto eq = line.find('='); eq != std::string::npos) {
            out[line.substr(0, eq)] = line.substr(eq + 1);
        }
    }
    return out;
}

Vars bootVars(const Vars& v)
{
    Vars out;
    for (const auto& [k, val] : v) {
        if (k.rfind("BOOT_", 0) == 0) {
            out[k] = val;
        }
    }
    return out;
}

// A committed slot A, then slot B armed for its trial (the two sides of the
// write that matters most).
const Vars kOld{{"BOOT_ORDER", "A B"},       {"BOOT_A_LEFT", "3"},         {"BOOT_B_LEFT", "0"},
                {"MBL_A_STATE", "good"},     {"MBL_A_VERSION", "1.0.0"},   {"MBL_A_SECURITY_VERSION", "1"},
                {"MBL_SECURITY_VERSION_FLOOR", "1"}};
const Vars kNew{{"BOOT_ORDER", "B A"},          {"BOOT_A_LEFT", "3"},
                {"BOOT_B_LEFT", "1"},           {"MBL_A_STATE", "good"},
                {"MBL_A_VERSION", "1.0.0"},     {"MBL_A_SECURITY_VERSION", "1"},
                {"MBL_B_STATE", "armed"},       {"MBL_B_VERSION", "2.0.0-rc.1+build.20261205"},
                {"MBL_B_SECURITY_VERSION", "2"}, {"MBL_SECURITY_VERSION_FLOOR", "1"}};

} // namespace

TEST_CASE("the block the update service writes is read by grub-editenv exactly as written, in place at the same size")
{
    test::TempDir dir("mbl-grubenv");
    const std::string env = dir.path() + "/grubenv";
    REQUIRE(grubenv::write(env, kOld));
    CHECK(grubList(env) == kOld);
    CHECK(readFile(env).size() == grubenv::kBlockSize);
    struct stat before{};
    REQUIRE(::stat(env.c_str(), &before) == 0);

    Vars odd = kNew;
    odd["saved_entry"] = "a\\b"; // a value with a backslash (escaped in the block)
    REQUIRE(grubenv::write(env, odd));
    CHECK(grubList(env) == odd);
    struct stat after{};
    REQUIRE(::stat(env.c_str(), &after) == 0);
    CHECK(after.st_ino == before.st_ino); // the same file (and so the same blocks), rewritten in place
    CHECK(after.st_size == before.st_size);

    // A block GRUB made larger (grub-editenv keeps a size that is a multiple of 1024) keeps its size.
    const std::string big = dir.path() + "/big";
    writeFile(big, *grubenv::render(kOld, 2048));
    REQUIRE(grubenv::write(big, kNew));
    CHECK(readFile(big).size() == 2048);
    CHECK(grubList(big) == kNew);

    // Variables that do not fit are refused and the block is left as it was.
    Vars huge = kNew;
    huge["MBL_X"] = std::string(1100, 'x');
    const std::string was = readFile(env);
    auto st = grubenv::write(env, huge);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::NoSpace);
    CHECK(readFile(env) == was);
}

TEST_CASE("a power cut at any byte of the write leaves a block GRUB reads; at a sector boundary the boot variables "
          "are the old set or the new set, never a mix")
{
    test::TempDir dir("mbl-grubenv");
    const std::string oldBlock = *grubenv::render(kOld);
    const std::string newBlock = *grubenv::render(kNew);
    REQUIRE(oldBlock.size() == newBlock.size());
    // The boot variables sit in the first 512-byte sector of both.
    for (const auto* b : {&oldBlock, &newBlock}) {
        const std::string first = b->substr(0, 512);
        for (const char* k : {"BOOT_ORDER=", "BOOT_A_LEFT=", "BOOT_B_LEFT="}) {
            CHECK(first.find(k) != std::string::npos);
        }
        CHECK(b->substr(512) == std::string(512, '#'));
    }
    const std::string env = dir.path() + "/grubenv";
    // The medium after a cut: the write reached byte `cut`, the rest is the old block.
    for (std::size_t cut = 0; cut <= newBlock.size(); ++cut) {
        INFO("cut at byte " << cut);
        writeFile(env, newBlock.substr(0, cut) + oldBlock.substr(cut));
        auto vars = grubList(env);
        REQUIRE(vars);
        if (cut % 512 == 0) {
            CHECK((bootVars(*vars) == bootVars(kOld) || bootVars(*vars) == bootVars(kNew)));
            CHECK(*vars == (cut == 0 ? kOld : kNew));
        }
    }
}

TEST_CASE("a writer stopped at every step leaves the old block or the new one, never an unreadable one")
{
    for (const char* step : {"open", "write", "sync", ""}) {
        DYNAMIC_SECTION("in place, stopped before '" << step << "'")
        {
            test::TempDir dir("mbl-grubenv");
            const std::string env = dir.path() + "/grubenv";
            REQUIRE(grubenv::write(env, kOld));
            (void)grubenv::write(env, kNew, [&](const char* s) { return std::string(s) != step; });
            auto vars = grubList(env);
            REQUIRE(vars);
            CHECK((*vars == kOld || *vars == kNew));
            CHECK(readFile(env).size() == grubenv::kBlockSize);
        }
    }
    // No block yet, or one an earlier grub-editenv left truncated: a new file
    // renamed over it. Until the rename the path is as it was.
    for (const char* before : {"missing", "truncated"}) {
        for (const char* step : {"create-tmp", "rename", "sync-dir", ""}) {
            DYNAMIC_SECTION(before << ", stopped before '" << step << "'")
            {
                test::TempDir dir("mbl-grubenv");
                const std::string env = dir.path() + "/grubenv";
                if (std::string(before) == "truncated") {
                    writeFile(env, "");
                }
                (void)grubenv::write(env, kNew, [&](const char* s) { return std::string(s) != step; });
                const bool renamed = std::string(step) == "sync-dir" || std::string(step).empty();
                if (renamed) {
                    CHECK(grubList(env) == kNew);
                } else if (std::string(before) == "missing") {
                    CHECK_FALSE(fs::exists(env));
                } else {
                    CHECK(readFile(env).empty());
                }
            }
        }
    }
}

TEST_CASE("the GRUB backend never writes through grub-editenv, whose rewrite truncates the block first")
{
    // grub-editenv (util/grub-editenv.c, write_envblk) opens the file with
    // fopen(name, "wb"), which truncates it, then writes the block: a power cut
    // between the two leaves an empty file GRUB cannot read. This stand-in lists
    // through the real tool but, asked to change anything, truncates the file
    // and dies as such a grub-editenv would.
    test::TempDir dir("mbl-grubenv");
    const std::string env = dir.path() + "/grubenv";
    const std::string tool = dir.path() + "/grub-editenv";
    writeFile(tool, "#!/bin/sh\n"
                    "if [ \"$2\" = list ]; then exec grub-editenv \"$@\"; fi\n"
                    ": > \"$1\"\n"
                    "kill -9 $$\n");
    REQUIRE(::chmod(tool.c_str(), 0755) == 0);
    REQUIRE(grubenv::write(env, kOld));

    mbl::update::BootloaderConfig cfg;
    cfg.type = "grub";
    cfg.path = env;
    cfg.grubEditenv = tool;
    auto bl = mbl::update::makeBootloader(cfg);
    REQUIRE(bl);
    std::map<std::string, std::optional<std::string>> changes;
    for (const auto& [k, v] : kNew) {
        changes[k] = v;
    }
    changes["MBL_OLD"] = std::nullopt;
    auto st = (*bl)->write(changes);
    INFO((st ? std::string() : st.error().describe()));
    CHECK(st);
    CHECK(grubList(env) == kNew);
    auto read = (*bl)->read();
    REQUIRE(read);
    CHECK(*read == kNew);
}
