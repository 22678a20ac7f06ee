// SPDX-License-Identifier: Apache-2.0
// An update bundle from a hostile source, read the way mbl-update reads it: an
// fd, the bounded head (manifest.json, manifest.json.sig), the signature check
// against a test trust store, the manifest rules, then every payload streamed
// chunk by chunk and the end of the archive. A forged signature only fails the
// signature check: the rest of the stream is read anyway, so that the tar
// reader is exercised past the point the daemon would stop.

#include "bundle.h"
#include "fuzz_util.h"

#include "mbl/crypto.h"

#include <cstddef>
#include <cstdint>
#include <string>

using namespace mbl;
using fuzz::check;

namespace {

// What a refused bundle may be called: a structural problem or a signature problem.
void refusal(const Error& e)
{
    check(e.code == ErrorCode::InvalidArgument || e.code == ErrorCode::SignatureInvalid);
    // mbl-update returns it as the bus error's message and keeps it in LastError.
    fuzz::checkMessage(e);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    std::string input(reinterpret_cast<const char*>(data), size);
    fuzz::fixTarChecksums(input);
    Fd fd = fuzz::memfdWith(input);

    bundle::Reader::Options o;
    o.idleTimeoutMs = 2000;
    // Odd block sizes move the member boundaries across read() calls.
    o.blockSize = 512 * (1 + size % 5) + size % 3;
    o.maxManifestBytes = 64u << 10;
    auto reader = bundle::Reader::open(fd.get(), o);
    if (!reader) {
        refusal(reader.error());
        return 0;
    }
    bundle::Reader& r = **reader;
    auto head = r.readHead();
    if (!head) {
        refusal(head.error());
        return 0;
    }
    check(head->manifest.size() <= o.maxManifestBytes && head->signature.size() <= bundle::kMaxSignatureBytes);
    if (auto s = bundle::verifySignature(head->manifest, head->signature, MBL_FUZZ_TRUST_DIR); s) {
        fuzz::trace("signature verified: " + s->subject);
    } else {
        refusal(s.error());
        check(s.error().code == ErrorCode::SignatureInvalid);
    }
    auto m = bundle::Manifest::parse(head->manifest);
    if (!m) {
        refusal(m.error());
        return 0;
    }
    (void)bundle::checkPolicy(*m, "fuzz-device", 1);
    for (const auto& p : m->payloads) {
        if (auto s = r.beginPayload(p); !s) {
            refusal(s.error());
            return 0;
        }
        crypto::Sha256 h;
        std::uint64_t got = 0;
        while (true) {
            auto c = r.read();
            if (!c) {
                refusal(c.error());
                return 0;
            }
            if (c->size == 0) {
                break;
            }
            h.update(c->data, c->size);
            got += c->size;
            check(got <= p.size);
        }
        check(got == p.size);
        (void)h.finishHex();
    }
    if (auto s = r.expectEnd(); !s) {
        refusal(s.error());
        return 0;
    }
    fuzz::trace("read the whole bundle " + m->version);
    check(r.consumed() <= input.size());
    return 0;
}
