// SPDX-License-Identifier: Apache-2.0
#include "mbl/curl_loader.h"

#include <dlfcn.h>

#include <mutex>

namespace mbl::curl {

namespace {

struct Loaded : Api {
    void* handle = nullptr;
    void (*globalCleanup)() = nullptr;
};

// Load and unload under one lock: curl_global_init/cleanup are not safe to run
// beside each other, and a load must not see a library being unloaded.
std::mutex loadMu;
std::weak_ptr<const Api> current;

template <typename F>
bool bind(void* handle, const char* name, F& fn)
{
    void* sym = ::dlsym(handle, name);
    if (sym == nullptr) {
        return false;
    }
    fn = reinterpret_cast<F>(sym); // POSIX: dlsym's result is the function's address
    return true;
}

void unload(Loaded* lib)
{
    std::lock_guard<std::mutex> lock(loadMu);
    lib->globalCleanup();
    ::dlclose(lib->handle);
    delete lib;
}

} // namespace

Expected<Library> loadLibrary(const std::string& soname)
{
    std::lock_guard<std::mutex> lock(loadMu);
    if (auto held = current.lock()) {
        return held;
    }
    void* handle = ::dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        const char* why = ::dlerror();
        return unexpected(ErrorCode::NotSupported,
                          "libcurl cannot be loaded (" + soname + "): " + (why != nullptr ? why : "dlopen failed"));
    }
    auto lib = std::make_unique<Loaded>();
    lib->handle = handle;
    CURLcode (*globalInit)(long) = nullptr;
    const char* missing = nullptr;
    auto need = [&](const char* name, auto& fn) {
        if (missing == nullptr && !bind(handle, name, fn)) {
            missing = name;
        }
    };
    need("curl_global_init", globalInit);
    need("curl_global_cleanup", lib->globalCleanup);
    need("curl_easy_init", lib->easyInit);
    need("curl_easy_cleanup", lib->easyCleanup);
    need("curl_easy_setopt", lib->easySetopt);
    need("curl_easy_perform", lib->easyPerform);
    need("curl_easy_getinfo", lib->easyGetinfo);
    need("curl_easy_strerror", lib->easyStrerror);
    need("curl_slist_append", lib->slistAppend);
    need("curl_slist_free_all", lib->slistFreeAll);
    if (missing != nullptr) {
        ::dlclose(handle);
        return unexpected(ErrorCode::NotSupported,
                          "libcurl cannot be loaded (" + soname + "): it has no " + std::string(missing));
    }
    if (const CURLcode rc = globalInit(CURL_GLOBAL_DEFAULT); rc != CURLE_OK) {
        const std::string why = lib->easyStrerror(rc);
        ::dlclose(handle);
        return unexpected(ErrorCode::Failed, "curl_global_init failed (" + soname + "): " + why);
    }
    Library held(lib.release(), [](const Api* api) { unload(static_cast<Loaded*>(const_cast<Api*>(api))); });
    current = held;
    return held;
}

} // namespace mbl::curl
