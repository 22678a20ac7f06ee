// SPDX-License-Identifier: Apache-2.0
#include "mbl/curl_loader.h"

#include "harness.h"

#include "mbl/fs.h"

#include <catch2/catch.hpp>

#include <string>

using namespace mbl;

namespace {
// Whether this process maps libcurl now (this test executable does not link it).
bool mapsLibcurl()
{
    auto maps = fs::readFile("/proc/self/maps", 1u << 24);
    REQUIRE(maps);
    return maps->find("/libcurl") != std::string::npos;
}

size_t append(char* p, size_t sz, size_t n, void* ud)
{
    static_cast<std::string*>(ud)->append(p, sz * n);
    return sz * n;
}
} // namespace

TEST_CASE("libcurl is mapped while a loaded library or a handle made from it is held, and unmapped after the last")
{
    REQUIRE_FALSE(mapsLibcurl());
    test::TempDir dir("mbl-curl-loader");
    const std::string path = dir.path() + "/hello";
    REQUIRE(fs::writeFileAtomic(path, "hello over file://", 0644));
    {
        auto lib = curl::loadLibrary();
        REQUIRE(lib);
        CHECK(mapsLibcurl());
        auto again = curl::loadLibrary();
        REQUIRE(again);
        CHECK(again->get() == lib->get()); // one load while one is held
        const curl::Api& api = **lib;
        curl::LoadedEasy c(api.easyInit(), {*lib});
        REQUIRE(c);
        lib = curl::Library();
        again = curl::Library();
        CHECK(mapsLibcurl()); // the easy handle keeps it loaded
        std::string body;
        const std::string url = "file://" + path;
        CHECK(api.easySetopt(c.get(), CURLOPT_URL, url.c_str()) == CURLE_OK);
        CHECK(api.easySetopt(c.get(), CURLOPT_WRITEFUNCTION, append) == CURLE_OK);
        CHECK(api.easySetopt(c.get(), CURLOPT_WRITEDATA, &body) == CURLE_OK);
        CHECK(api.easyPerform(c.get()) == CURLE_OK);
        CHECK(body == "hello over file://");
        CHECK(std::string(api.easyStrerror(CURLE_COULDNT_CONNECT)) == "Couldn't connect to server");
    }
    CHECK_FALSE(mapsLibcurl());
    auto reloaded = curl::loadLibrary(); // loads again after an unload
    REQUIRE(reloaded);
    CHECK(mapsLibcurl());
}

TEST_CASE("a libcurl that cannot be loaded is NotSupported, naming the library and the loader's reason")
{
    auto lib = curl::loadLibrary("libcurl-not-here.so.4");
    REQUIRE_FALSE(lib);
    CHECK(lib.error().code == ErrorCode::NotSupported);
    INFO(lib.error().message);
    CHECK(lib.error().message.find("libcurl cannot be loaded (libcurl-not-here.so.4): ") == 0);
    CHECK(lib.error().message.find("No such file") != std::string::npos);
}
