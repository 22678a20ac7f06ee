// SPDX-License-Identifier: Apache-2.0
#pragma once
// libcurl loaded at run time (dlopen) by a daemon that needs HTTP rarely: the
// identity service, for EST only. The idle daemon then maps neither libcurl nor
// what a distribution's curl brings with it (Debian's: ~30 libraries, issue 18).
// The library stays loaded while any Library handle (or a handle made from it)
// lives, and is unloaded when the last one goes. The cloud client, which polls
// all the time, links libcurl as usual (mbl/curl.h).

#include "mbl/expected.h"

#include <curl/curl.h>

#include <memory>
#include <string>

namespace mbl::curl {

// libcurl's ABI name (soname 4 since curl 7.16).
inline constexpr const char* kLibcurlSoname = "libcurl.so.4";

// The libcurl calls our code makes, from the loaded library.
struct Api {
    CURL* (*easyInit)() = nullptr;
    void (*easyCleanup)(CURL*) = nullptr;
    CURLcode (*easySetopt)(CURL*, CURLoption, ...) = nullptr;
    CURLcode (*easyPerform)(CURL*) = nullptr;
    CURLcode (*easyGetinfo)(CURL*, CURLINFO, ...) = nullptr;
    const char* (*easyStrerror)(CURLcode) = nullptr;
    curl_slist* (*slistAppend)(curl_slist*, const char*) = nullptr;
    void (*slistFreeAll)(curl_slist*) = nullptr;
};
using Library = std::shared_ptr<const Api>;

// The loaded libcurl, loaded (and curl_global_init'ed) now unless a Library is
// already held. NotSupported naming `soname` and the loader's reason if it
// cannot be loaded or lacks one of Api's functions.
Expected<Library> loadLibrary(const std::string& soname = kLibcurlSoname);

// Handles of a loaded libcurl; each keeps the library loaded until it is freed.
struct LoadedEasyFree {
    Library lib;
    void operator()(CURL* c) const { lib->easyCleanup(c); }
};
struct LoadedSlistFree {
    Library lib;
    void operator()(curl_slist* l) const { lib->slistFreeAll(l); }
};
using LoadedEasy = std::unique_ptr<CURL, LoadedEasyFree>;
using LoadedSlist = std::unique_ptr<curl_slist, LoadedSlistFree>;

} // namespace mbl::curl
