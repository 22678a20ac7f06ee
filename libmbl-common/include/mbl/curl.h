// SPDX-License-Identifier: Apache-2.0
#pragma once
// libcurl handles owned by RAII (the cloud client's HTTP work). Users link libcurl.

#include <curl/curl.h>

#include <memory>

namespace mbl::curl {

struct EasyFree {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistFree {
    void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
struct UrlFree {
    void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
struct StrFree {
    void operator()(char* s) const { curl_free(s); }
};

using Easy = std::unique_ptr<CURL, EasyFree>;
using Slist = std::unique_ptr<curl_slist, SlistFree>;
using Url = std::unique_ptr<CURLU, UrlFree>;
using Str = std::unique_ptr<char, StrFree>;

} // namespace mbl::curl
