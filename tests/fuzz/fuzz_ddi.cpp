// The hawkBit DDI parsers on a hostile server reply: the controller base, the
// deploymentBase / confirmationBase normalisation, cancelAction, the poll
// sleep and Retry-After. Every parser sees the same body; properties the
// callers rely on are checked and a violation aborts (a finding).

#include "ddi.h"
#include "fuzz_util.h"

#include "mbl/strings.h"

#include <cstddef>
#include <cstdint>
#include <string>

using namespace mbl;
using namespace mbl::cloud;
using fuzz::check;

namespace {

const Origin kServer{"https", "hawkbit.example.com", 443};
constexpr std::int64_t kNow = 1700000000;

template <typename T>
bool accepted(const Expected<T>& r)
{
    if (!r) {
        // The cloud client shows these in its LastError property and in logs.
        check(r.error().code == ErrorCode::InvalidArgument);
        fuzz::checkMessage(r.error());
    }
    return r.ok();
}

void deployment(const Expected<nlohmann::json>& d)
{
    if (!accepted(d)) {
        return;
    }
    // What the coordinator reads (contract C1): every artifact has a name, a sha256
    // and a link to the server (the default policy allows no other host, no http).
    for (const auto& c : d->at("chunks")) {
        for (const auto& a : c.at("artifacts")) {
            check(a.at("sha256").get<std::string>().size() == 64);
            check(!a.at("filename").get<std::string>().empty());
            check(fuzz::validUtf8(a.at("filename").get<std::string>())); // a signal string of its own
            check(checkLink(a.at("url").get<std::string>(), kServer, {}, true).ok());
        }
    }
    check(d->at("install_allowed").get<bool>() == (d->at("update") != "skip" && d->at("maintenance_window") != "unavailable"));
    check(!d->at("download_only").get<bool>() || !d->at("install_allowed").get<bool>());
    // Sent as the DeploymentRequested / ConfirmationRequested signal's string (finding D2, fixed: ASCII JSON).
    check(fuzz::validUtf8(busJson(*d)));
    check(str::isSafeName(d->at("action_id").get<std::string>(), 64));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string body(reinterpret_cast<const char*>(data), size);

    auto p = parsePoll(body);
    if (accepted(p)) {
        if (p->sleep) {
            check(p->sleep->count() >= 1 && p->sleep->count() <= 30 * 24 * 3600);
        }
        for (const auto* h : {&p->deploymentBase, &p->cancelAction, &p->configData, &p->installedBase,
                              &p->confirmationBase}) {
            (void)actionIdFromHref(*h);
            (void)accepted(checkLink(*h, kServer));
        }
    }
    deployment(normaliseDeployment(body, kServer));
    deployment(normaliseConfirmation(body, kServer));
    (void)accepted(parseCancelAction(body));

    // A poll sleep also comes as plain text from the settings (JSON) or a D-Bus
    // string, both UTF-8 already.
    if (fuzz::validUtf8(body)) {
        auto s = parseSleep(body);
        if (accepted(s)) {
            check(s->count() >= 1 && s->count() <= 30 * 24 * 3600);
        }
    }
    if (auto r = parseRetryAfter(body, kNow)) {
        check(r->count() >= 0);
    }
    (void)originOf(body);
    // Artifact _links as the server sends them.
    {
        const auto j = nlohmann::json::parse(body, nullptr, false);
        if (auto link = chooseArtifactLink(j); link) {
            (void)checkLink(*link, kServer, LinkPolicy{true, true}, true);
        }
    }
    return 0;
}
