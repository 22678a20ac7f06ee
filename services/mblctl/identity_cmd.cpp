// SPDX-License-Identifier: Apache-2.0
// mblctl identity: show the device identity, make a CSR, install a certificate,
// enrol or renew over EST, provision, factory-reset — all through
// org.mbl.DeviceIdentity1.

#include "mblctl.h"

#include "mbl/fs.h"

#include "identity_client.h"

#include <nlohmann/json.hpp>

#include <ctime>
#include <iostream>
#include <unistd.h>

namespace mbl::ctl {

namespace {

std::string isoTime(uint64_t t)
{
    if (t == 0) {
        return "-";
    }
    std::time_t tt = static_cast<std::time_t>(t);
    struct tm tm {};
    gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

// A file's text, or stdin for "-"; nullopt (after a message) on failure.
std::optional<std::string> readInput(const std::string& path, const char* what)
{
    auto text = path == "-" ? fs::readAll(STDIN_FILENO, 1u << 20) : fs::readFile(path, 1u << 20);
    if (!text) {
        std::cerr << "mblctl identity " << what << ": " << text.error().message << "\n";
        return std::nullopt;
    }
    return *text;
}

int show(Context& ctx, IdentityProxy& proxy)
{
    nlohmann::json out = {{"device_id", proxy.DeviceId()},
                          {"provisioned", proxy.Provisioned()},
                          {"certificate_not_after", proxy.CertificateNotAfter()},
                          {"key_storage", proxy.KeyStorage()},
                          {"state", proxy.State()},
                          {"renewal_state", proxy.RenewalState()},
                          {"next_renewal", proxy.NextRenewal()},
                          {"last_renewal_error", proxy.LastRenewalError()}};
    nlohmann::json prov = nullptr;
    std::string provNote;
    try {
        prov = nlohmann::json::parse(proxy.GetProvisioning());
        prov.erase("server_ca_pem");
        prov.erase("certificate_chain_pem");
    } catch (const sdbus::Error& e) {
        provNote = e.getMessage();
    }
    out["provisioning"] = prov;
    if (ctx.json) {
        std::cout << out.dump(2) << "\n";
        return 0;
    }
    std::cout << "DeviceId:            " << out["device_id"].get<std::string>() << "\n"
              << "State:               " << out["state"].get<std::string>() << "\n"
              << "KeyStorage:          " << out["key_storage"].get<std::string>() << "\n"
              << "CertificateNotAfter: " << isoTime(out["certificate_not_after"].get<uint64_t>()) << "\n"
              << "Renewal:             " << out["renewal_state"].get<std::string>() << "\n"
              << "NextRenewal:         " << isoTime(out["next_renewal"].get<uint64_t>()) << "\n";
    if (!out["last_renewal_error"].get<std::string>().empty()) {
        std::cout << "LastRenewalError:    " << out["last_renewal_error"].get<std::string>() << "\n";
    }
    std::cout
              << "Provisioned:         " << (out["provisioned"].get<bool>() ? "yes" : "no") << "\n";
    if (prov.is_object()) {
        std::cout << "  server_url:        " << prov.value("server_url", "") << "\n"
                  << "  tenant:            " << prov.value("tenant", "") << "\n"
                  << "  auth_mode:         " << prov.value("auth_mode", "") << "\n"
                  << "  token:             " << (prov.value("token_set", false) ? "set (hidden)" : "none") << "\n";
    } else if (out["provisioned"].get<bool>() && !provNote.empty()) {
        std::cout << "  (" << provNote << ")\n";
    }
    return 0;
}

int csr(IdentityProxy& proxy, const std::vector<std::string>& args)
{
    std::map<std::string, sdbus::Variant> options;
    std::vector<std::string> san;
    std::string outFile;
    const std::map<std::string, std::string> fields = {
        {"--o", "O"}, {"--ou", "OU"}, {"--c", "C"}, {"--st", "ST"}, {"--l", "L"}};
    for (std::size_t i = 1; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (i + 1 >= args.size()) {
            std::cerr << "mblctl identity csr: '" << a << "' needs a value\n";
            return 2;
        }
        if (auto f = fields.find(a); f != fields.end()) {
            options[f->second] = sdbus::Variant(args[++i]);
        } else if (a == "--san") {
            san.push_back(args[++i]);
        } else if (a == "--out") {
            outFile = args[++i];
        } else {
            std::cerr << "mblctl identity csr: unknown option '" << a << "'\n";
            return 2;
        }
    }
    if (!san.empty()) {
        options["SAN"] = sdbus::Variant(san);
    }
    const std::string pem = proxy.CreateCertificateRequest(options);
    if (outFile.empty()) {
        std::cout << pem;
        return 0;
    }
    if (auto st = fs::writeFileAtomic(outFile, pem, 0644); !st) {
        std::cerr << "mblctl identity csr: " << st.error().message << "\n";
        return 1;
    }
    std::cerr << "CSR for " << proxy.DeviceId() << " written to " << outFile << "\n";
    return 0;
}

int reset(IdentityProxy& proxy, const std::vector<std::string>& args)
{
    bool yes = args.size() > 1 && args[1] == "--yes";
    if (!yes && ::isatty(STDIN_FILENO) == 1) {
        std::cout << "This erases the device key, certificate and provisioning of " << proxy.DeviceId()
                  << ".\nThe device gets a new identity and must be provisioned again. Type 'reset' to go on: "
                  << std::flush;
        std::string answer;
        std::getline(std::cin, answer);
        if (answer != "reset") {
            std::cout << "Nothing changed.\n";
            return 1;
        }
    }
    proxy.FactoryReset();
    std::cout << "Factory reset done; new DeviceId " << proxy.DeviceId() << "\n";
    return 0;
}

int runIdentity(Context& ctx, const std::vector<std::string>& args)
{
    const std::string sub = args.empty() ? "show" : args[0];
    std::vector<std::string> rest = args;
    if (!rest.empty() && rest.back() == "--json") {
        ctx.json = true;
        rest.pop_back();
    }
    IdentityProxy proxy(ctx.bus());
    if (sub == "show") {
        return show(ctx, proxy);
    }
    if (sub == "csr") {
        return csr(proxy, rest);
    }
    if ((sub == "install-cert" || sub == "provision") && rest.size() != 2) {
        std::cerr << "mblctl identity " << sub << ": needs one FILE (or - for stdin)\n";
        return 2;
    }
    if (sub == "install-cert") {
        auto pem = readInput(rest[1], "install-cert");
        if (!pem) {
            return 1;
        }
        proxy.InstallCertificate(*pem);
        std::cout << "Certificate installed; valid until " << isoTime(proxy.CertificateNotAfter()) << "\n";
        return 0;
    }
    if (sub == "provision") {
        auto doc = readInput(rest[1], "provision");
        if (!doc) {
            return 1;
        }
        proxy.Provision(*doc);
        std::cout << "Provisioned; DeviceId " << proxy.DeviceId() << "\n";
        return 0;
    }
    if (sub == "reset") {
        return reset(proxy, rest);
    }
    if (sub == "enroll" || sub == "renew") {
        // EST: the identity service makes the CSR with the device key and checks the answer.
        if (sub == "enroll") {
            proxy.Enroll();
        } else {
            proxy.Renew();
        }
        std::cout << (sub == "enroll" ? "Enrolled" : "Renewed") << "; certificate valid until "
                  << isoTime(proxy.CertificateNotAfter()) << ", next renewal " << isoTime(proxy.NextRenewal()) << "\n";
        return 0;
    }
    std::cerr << "mblctl identity: unknown subcommand '" << sub
              << "' (show, csr, install-cert, enroll, renew, provision, reset)\n";
    return 2;
}

} // namespace

void registerIdentityCommands(std::vector<Command>& out)
{
    out.push_back({"identity",
                   "identity show | csr [--o O] [--ou OU] [--c CC] [--st ST] [--l L] [--san DNS:name]... [--out FILE] "
                   "| install-cert FILE | enroll | renew | provision FILE | reset [--yes]",
                   "Show the device identity, make a CSR, install a certificate, enrol or renew it over EST, "
                   "provision, factory-reset.",
                   runIdentity});
}

} // namespace mbl::ctl
