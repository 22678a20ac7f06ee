// SPDX-License-Identifier: Apache-2.0
// Unpacking app archives and generating their runtime config, without a bus:
// hostile archives are refused with a named error and write nothing outside
// the staging directory.

#include "app_config.h"
#include "image_tools.h"
#include "oci_image.h"

#include "mbl/archive_ptr.h"
#include "mbl/fd.h"
#include "mbl/fs.h"

#include <catch2/catch.hpp>

#include <cstdio>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace mbl;
using namespace mbl::containers;
using nlohmann::json;

namespace {

json file(const std::string& name, const std::string& data, int mode = 0644)
{
    return {{"name", name}, {"type", "file"}, {"data", data}, {"mode", mode}};
}
json dir(const std::string& name)
{
    return {{"name", name}, {"type", "dir"}};
}

struct Staging {
    test::TempDir tmp{"mbl-cm-unit"};
    std::string stage() const { return tmp.path() + "/stage"; }
    // A canary outside the staging directory that hostile entries aim at.
    std::string outside() const { return tmp.path() + "/outside"; }

    Expected<StagedImage> install(const json& spec, StageOptions opts = {})
    {
        (void)fs::makeDirs(stage(), 0700);
        (void)fs::makeDirs(outside(), 0755);
        const std::string archive = test::makeArchive(tmp.path(), "a", spec);
        Fd fd{::open(archive.c_str(), O_RDONLY | O_CLOEXEC)};
        return stageArchive(fd.get(), stage(), opts);
    }
    std::string rootfs(const std::string& rel) const { return stage() + "/rootfs/" + rel; }
};

json image(std::vector<json> layers, json extra = json::object())
{
    json spec = {{"kind", "image"}, {"layers", layers}, {"config", {{"Cmd", {"/bin/app"}}}}};
    for (auto it = extra.begin(); it != extra.end(); ++it) {
        spec[it.key()] = it.value();
    }
    return spec;
}

bool refusedAs(const Expected<StagedImage>& r, ErrorCode code, const std::string& words)
{
    if (r) {
        UNSCOPED_INFO("the archive was accepted");
        return false;
    }
    UNSCOPED_INFO(r.error().describe());
    return r.error().code == code && r.error().message.find(words) != std::string::npos;
}

} // namespace

TEST_CASE("an OCI image's layers are applied in order with gzip, zstd and plain tar, whiteouts and opaque whiteouts")
{
    Staging s;
    auto spec = image({json::array({dir("etc"), file("etc/keep", "k"), file("etc/gone", "g"), dir("opq"),
                                    file("opq/old", "o"), file("bin/app", "#!/bin/sh\n", 0755)}),
                       json::array({file(".wh.x", ""), {{"name", "etc/.wh.gone"}, {"type", "file"}},
                                    {{"name", "opq/.wh..wh..opq"}, {"type", "file"}}, file("opq/new", "n")}),
                       json::array({file("etc/keep", "k2")})},
                      {{"compression", {"gzip", "zstd", "none"}}, {"version", "2.5"}, {"ref", "v2"}});
    auto r = s.install(spec);
    INFO((r ? std::string() : r.error().describe()));
    REQUIRE(r);
    CHECK(r->kind == "oci-image");
    CHECK(r->version == "2.5");
    CHECK(r->refName == "v2");
    CHECK(r->process.args == std::vector<std::string>{"/bin/app"});
    CHECK(*fs::readFile(s.rootfs("etc/keep")) == "k2");
    CHECK_FALSE(fs::exists(s.rootfs("etc/gone")));
    CHECK_FALSE(fs::exists(s.rootfs("opq/old")));
    CHECK(*fs::readFile(s.rootfs("opq/new")) == "n");
    CHECK_FALSE(fs::exists(s.rootfs("opq/.wh..wh..opq")));
    CHECK_FALSE(fs::exists(s.stage() + "/blobs")); // the blobs are not kept
}

TEST_CASE("a runtime bundle archive gives its rootfs and only its process, never its isolation settings")
{
    Staging s;
    json spec = {{"kind", "bundle"},
                 {"layers", {json::array({dir("bin"), file("bin/app", "x", 0755)})}},
                 {"config", {{"Cmd", {"/bin/app", "--serve"}}, {"Env", {"A=1"}}}}};
    auto r = s.install(spec);
    REQUIRE(r);
    CHECK(r->kind == "oci-bundle");
    CHECK(r->process.args == std::vector<std::string>{"/bin/app", "--serve"});
    CHECK(fs::exists(s.rootfs("bin/app")));
}

TEST_CASE("a tar entry ../../etc/passwd is refused with InvalidArgument and nothing is written outside")
{
    Staging s;
    auto r = s.install(image({json::array({file("../../outside/passwd", "pwned")})}));
    CHECK(refusedAs(r, ErrorCode::InvalidArgument, "'..'"));
    CHECK_FALSE(fs::exists(s.outside() + "/passwd"));
    json bundle = {{"kind", "bundle"}, {"layers", {json::array({file("../../outside/passwd", "pwned")})}}};
    CHECK(refusedAs(s.install(bundle), ErrorCode::InvalidArgument, "'..'"));
    CHECK_FALSE(fs::exists(s.outside() + "/passwd"));
}

TEST_CASE("an absolute entry name is refused")
{
    Staging s;
    json bundle = {{"kind", "bundle"}, {"layers", {json::array({file(s.outside() + "/abs", "pwned")})}}};
    CHECK(refusedAs(s.install(bundle), ErrorCode::InvalidArgument, "absolute"));
    CHECK_FALSE(fs::exists(s.outside() + "/abs"));
    CHECK(refusedAs(s.install(image({json::array({file(s.outside() + "/abs", "pwned")})})),
                    ErrorCode::InvalidArgument, "absolute"));
    CHECK_FALSE(fs::exists(s.outside() + "/abs"));
}

TEST_CASE("an absolute symlink followed by a write through it is refused")
{
    Staging s;
    auto r = s.install(image({json::array({{{"name", "escape"}, {"type", "symlink"}, {"target", s.outside()}},
                                           file("escape/owned", "pwned")})}));
    CHECK(refusedAs(r, ErrorCode::InvalidArgument, "symlink"));
    CHECK_FALSE(fs::exists(s.outside() + "/owned"));
    // Also across layers, and with a relative symlink climbing out.
    auto r2 = s.install(image({json::array({{{"name", "up"}, {"type", "symlink"}, {"target", "../../outside"}}}),
                               json::array({file("up/owned2", "pwned")})}));
    CHECK(refusedAs(r2, ErrorCode::InvalidArgument, "symlink"));
    CHECK_FALSE(fs::exists(s.outside() + "/owned2"));
}

TEST_CASE("a hardlink to a file outside the root is refused")
{
    Staging s;
    (void)fs::makeDirs(s.outside(), 0755);
    (void)fs::writeFileAtomic(s.outside() + "/secret", "secret");
    auto r = s.install(image({json::array({{{"name", "link"}, {"type", "hardlink"}, {"target", "../../outside/secret"}}})}));
    CHECK(refusedAs(r, ErrorCode::InvalidArgument, "hardlink"));
    auto r2 = s.install(image({json::array({{{"name", "link"}, {"type", "hardlink"}, {"target", s.outside() + "/secret"}}})}));
    CHECK(refusedAs(r2, ErrorCode::InvalidArgument, "hardlink"));
    // A hardlink through a symlink that points outside is refused too.
    auto r3 = s.install(image({json::array({{{"name", "o"}, {"type", "symlink"}, {"target", s.outside()}},
                                            {{"name", "link"}, {"type", "hardlink"}, {"target", "o/secret"}}})}));
    CHECK(refusedAs(r3, ErrorCode::InvalidArgument, "symlink"));
    // A hardlink inside the root is fine.
    auto ok = s.install(image({json::array({file("a", "x"), {{"name", "b"}, {"type", "hardlink"}, {"target", "a"}}})}));
    REQUIRE(ok);
}

TEST_CASE("a device node is refused")
{
    Staging s;
    auto r = s.install(image({json::array({{{"name", "dev/null"}, {"type", "chardev"}}})}));
    CHECK(refusedAs(r, ErrorCode::InvalidArgument, "device node"));
}

TEST_CASE("setuid bits are dropped unless the device policy allows them")
{
    Staging s;
    auto r = s.install(image({json::array({file("bin/su", "x", 04755)})}));
    REQUIRE(r);
    struct stat st {};
    REQUIRE(::stat(s.rootfs("bin/su").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0755);
    Staging s2;
    StageOptions o;
    o.limits.allowSetuid = true;
    REQUIRE(s2.install(image({json::array({file("bin/su", "x", 04755)})}), o));
    REQUIRE(::stat(s2.rootfs("bin/su").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 04755);
}

TEST_CASE("a layer over the quota is refused with NoSpace")
{
    Staging s;
    StageOptions o;
    o.limits.quotaBytes = 1u << 20;
    auto r = s.install(image({json::array({{{"name", "big"}, {"type", "file"}, {"size", 2u << 20}}})}), o);
    CHECK(refusedAs(r, ErrorCode::NoSpace, "quota"));
}

TEST_CASE("a truncated archive is refused")
{
    Staging s;
    auto r = s.install(image({json::array({{{"name", "big"}, {"type", "file"}, {"size", 300000}}})}, {{"truncate", 5000}}));
    CHECK(refusedAs(r, ErrorCode::InvalidArgument, ""));
}

TEST_CASE("a layer whose digest does not match is refused")
{
    Staging s;
    auto r = s.install(image({json::array({file("a", std::string(5000, 'a'))})}, {{"corrupt_layer", 0}}));
    CHECK(refusedAs(r, ErrorCode::InvalidArgument, "digest mismatch"));
}

TEST_CASE("a missing blob is refused")
{
    Staging s;
    auto r = s.install(image({json::array({file("a", "a")})}, {{"omit_layer", 0}}));
    CHECK(refusedAs(r, ErrorCode::InvalidArgument, "missing blob"));
}

TEST_CASE("an unknown layer media type is refused")
{
    Staging s;
    auto r = s.install(image({json::array({file("a", "a")})}, {{"layer_media_type", "application/x-unknown"}}));
    CHECK(refusedAs(r, ErrorCode::InvalidArgument, "unknown media type"));
}

TEST_CASE("an index.json with no manifest, or several without a selection, is refused")
{
    Staging s;
    CHECK(refusedAs(s.install(image({json::array({file("a", "a")})}, {{"no_manifest", true}})),
                    ErrorCode::InvalidArgument, "no manifest"));
    auto several = image({json::array({file("a", "a")})}, {{"manifests", 2}, {"ref", "v1"}});
    CHECK(refusedAs(s.install(several), ErrorCode::InvalidArgument, "choose one"));
    StageOptions o;
    o.imageRef = "v1";
    Staging s2;
    CHECK(s2.install(several, o));
}

TEST_CASE("an archive that is neither an image layout nor a bundle is refused")
{
    Staging s;
    json spec = {{"kind", "bundle"}, {"layers", {json::array({file("/etc/x", "a")})}}};
    (void)fs::makeDirs(s.stage(), 0700);
    const std::string bogus = s.tmp.path() + "/bogus.tar";
    test::mustRun({"tar", "-C", "/etc", "-cf", bogus, "hostname"});
    Fd fd{::open(bogus.c_str(), O_RDONLY | O_CLOEXEC)};
    auto r = stageArchive(fd.get(), s.stage(), {});
    CHECK(refusedAs(r, ErrorCode::InvalidArgument, "unexpected entry"));
}

TEST_CASE("a tar header libarchive refuses without giving a reason is refused with InvalidArgument, outer or layer")
{
    // Found by tests/fuzz/fuzz_oci: a GNU long-name header whose name data is
    // missing makes libarchive fail with no error string (NULL), which was
    // appended to a std::string: SIGSEGV in the install worker, the daemon gone.
    std::string h(512, '\0');
    auto put = [&](std::size_t at, const std::string& v) { h.replace(at, v.size(), v); };
    put(0, "././@LongLink");
    put(100, "0000644");
    put(108, "0000000");
    put(116, "0000000");
    put(124, "00000000144"); // 100 bytes of name announced, none follow
    put(136, "00000000000");
    put(156, "L");
    put(257, std::string("ustar  \0", 8));
    put(148, std::string(8, ' '));
    unsigned sum = 0;
    for (unsigned char c : h) {
        sum += c;
    }
    char chk[8];
    std::snprintf(chk, sizeof chk, "%06o", sum);
    put(148, std::string(chk, 6) + std::string("\0 ", 2));

    Staging s;
    (void)fs::makeDirs(s.stage(), 0700);
    const std::string path = s.tmp.path() + "/longlink.tar";
    REQUIRE(fs::writeFileAtomic(path, h));
    Fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    CHECK(refusedAs(stageArchive(fd.get(), s.stage(), {}), ErrorCode::InvalidArgument, "truncated or corrupt archive"));

    const std::string root = s.tmp.path() + "/layer-root";
    REQUIRE(fs::makeDirs(root, 0755));
    auto w = RootfsWriter::open(root, {});
    REQUIRE(w);
    ArchiveReader a{archive_read_new()};
    archive_read_support_format_tar(a.get());
    REQUIRE(archive_read_open_memory(a.get(), h.data(), h.size()) == ARCHIVE_OK);
    auto st = w->unpackLayer(a.get(), "layer 1 of 1");
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::InvalidArgument);
    CHECK(st.error().message.find("layer 1 of 1: truncated or corrupt archive") != std::string::npos);
}

TEST_CASE("image and bundle documents with members of the wrong type are refused with InvalidArgument or ignored")
{
    // Found by tests/fuzz/fuzz_oci: nlohmann's value() throws on a member of
    // another type than its default ("cwd": 5); the exception left the install
    // worker's thread and std::terminate ended the daemon.
    for (const json& process : {json{{"cwd", 5}}, json{{"user", {{"uid", "root"}}}},
                                json{{"user", {{"uid", 0}, {"gid", -1}}}}, json{{"user", {{"gid", 1e30}}}}}) {
        INFO(process.dump());
        Staging s;
        json spec = {{"kind", "bundle"}, {"layers", {json::array({file("bin/app", "x", 0755)})}}, {"process", process}};
        CHECK(refusedAs(s.install(spec), ErrorCode::InvalidArgument, "config.json: \"process."));
    }
    {
        Staging s;
        json spec = {{"kind", "bundle"},
                     {"layers", {json::array({file("bin/app", "x", 0755)})}},
                     {"process", {{"cwd", "/srv"}, {"user", {{"uid", 1000}, {"gid", 100}}}}}};
        auto r = s.install(spec);
        REQUIRE(r);
        CHECK(r->process.cwd == "/srv");
        CHECK(r->process.user == "1000:100");
    }
    // Informational members of another type are ignored, as if absent.
    Staging s;
    auto r = s.install(image({json::array({file("bin/app", "x", 0755)})},
                             {{"config", {{"Cmd", {"/bin/app"}}, {"Labels", {{"org.opencontainers.image.version", 7}}}}}}));
    REQUIRE(r);
    CHECK(r->version.empty());
    CHECK(r->process.args == std::vector<std::string>{"/bin/app"});
}

TEST_CASE("install options whose numbers do not fit their setting, or of another JSON type, are refused with InvalidArgument")
{
    // Found by tests/fuzz/fuzz_app_config: get<std::uint32_t>() of 1e100 is
    // undefined behaviour (UBSan), 4294967396 became 100, 1.5 became 1, a
    // memory_mb of 2^44+4 wrapped to 4 MiB, and a non-string mount destination
    // threw out of parseSettings.
    ManagerConfig cfg;
    cfg.policy.allowedMounts = {"/srv"};
    for (const char* opts :
         {R"({"cpu_percent": 1e100})", R"({"cpu_percent": 4294967396})", R"({"pids_max": 1.5})",
          R"({"memory_bytes": -1})", R"({"memory_mb": 17592186044420})", R"({"autostart": 1})",
          R"({"health": {"grace_ms": -5}})", R"({"mounts": [{"source": "/srv", "destination": 1}]})"}) {
        INFO(opts);
        Expected<AppSettings> s = unexpected(ErrorCode::Failed, "not run");
        REQUIRE_NOTHROW(s = parseSettings(opts, cfg));
        REQUIRE_FALSE(s);
        CHECK(s.error().code == ErrorCode::InvalidArgument);
    }
    auto ok = parseSettings(R"({"cpu_percent": 50, "memory_mb": 64, "mounts": [{"source": "/srv/a"}]})", cfg);
    REQUIRE(ok);
    CHECK(ok->cpuPercent == 50);
    CHECK(ok->memoryBytes == 64u << 20);
    CHECK(ok->mounts.at(0).destination == "/srv/a");
}

TEST_CASE("app names that are not safe path components are refused")
{
    ManagerConfig cfg;
    for (const char* bad : {"../x", "a/b", ".hidden", "", " x", "a b", "x\n"}) {
        INFO(bad);
        json o = {{"name", bad}};
        auto s = parseSettings(o.dump(), cfg);
        if (std::string(bad).empty()) {
            CHECK(s); // no name: the image's ref.name is used later
        } else {
            REQUIRE_FALSE(s);
            CHECK(s.error().code == ErrorCode::InvalidArgument);
        }
    }
}

TEST_CASE("settings asking for more privilege than the device policy allows are refused with AccessDenied")
{
    ManagerConfig cfg;
    cfg.policy.allowHostNetwork = false;
    cfg.policy.allowedMounts = {"/etc/ssl"};
    for (const char* opts : {R"({"host_pid": true})", R"({"network": "host"})", R"({"capabilities": ["CAP_SYS_ADMIN"]})",
                             R"({"mounts": [{"source": "/etc/shadow", "destination": "/x"}]})",
                             R"({"devices": ["/dev/mem"]})"}) {
        INFO(opts);
        auto s = parseSettings(opts, cfg);
        REQUIRE_FALSE(s);
        CHECK(s.error().code == ErrorCode::AccessDenied);
    }
    CHECK(parseSettings(R"({"mounts": [{"source": "/etc/ssl/certs", "destination": "/etc/ssl/certs"}]})", cfg));
    auto unknown = parseSettings(R"({"privileged": true})", cfg);
    REQUIRE_FALSE(unknown);
    CHECK(unknown.error().code == ErrorCode::InvalidArgument);
}

TEST_CASE("the generated runtime config is hardened and never asks for a terminal")
{
    ManagerConfig cfg;
    auto s = parseSettings(R"({"name": "web", "version": "1", "memory_mb": 64, "env": {"MODE": "prod"}})", cfg);
    REQUIRE(s);
    SpecInputs in;
    in.process.args = {"/bin/web"};
    in.process.env = {"MODE=dev", "X=1"};
    in.dataDir = "/var/lib/mbl/apps/web/data";
    in.cgroupsPath = "/mbl/web";
    auto spec = generateSpec(*s, in);
    CHECK(spec["process"]["terminal"] == false);
    CHECK(spec["process"]["noNewPrivileges"] == true);
    CHECK(spec["root"]["readonly"] == true);
    CHECK(spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO");
    CHECK(spec["linux"]["resources"]["memory"]["limit"] == 64u << 20);
    CHECK(spec["linux"]["cgroupsPath"] == "/mbl/web");
    auto env = spec["process"]["env"].get<std::vector<std::string>>();
    CHECK(std::count(env.begin(), env.end(), "MODE=prod") == 1);
    CHECK(std::count(env.begin(), env.end(), "MODE=dev") == 0);
    std::vector<std::string> ns;
    for (const auto& n : spec["linux"]["namespaces"]) {
        ns.push_back(n["type"]);
    }
    for (const char* want : {"pid", "ipc", "uts", "mount", "network"}) {
        CHECK(std::count(ns.begin(), ns.end(), want) == 1);
    }
    bool data = false;
    bool tmp = false;
    for (const auto& m : spec["mounts"]) {
        data = data || (m["destination"] == "/data" && m["source"] == in.dataDir);
        tmp = tmp || (m["destination"] == "/tmp" && m["type"] == "tmpfs");
    }
    CHECK(data);
    CHECK(tmp);
    auto caps = spec["process"]["capabilities"]["effective"].get<std::vector<std::string>>();
    CHECK(std::count(caps.begin(), caps.end(), "CAP_SYS_ADMIN") == 0);
    CHECK(caps == defaultCapabilities());
}
