// SPDX-License-Identifier: Apache-2.0
// An OCI image layout whose documents are fuzzed but whose digests are right,
// so that the mutations reach index.json selection, the image manifest, the
// image config -> process conversion and the layer unpacking (the raw archive
// harness stops at the digest check). Input: parts separated by "\n@@@@\n":
//   index.json, image manifest, image config, layer 0, layer 1, ...
// In the JSON parts, @M@ / @MS@, @C@ / @CS@ and @L0@ / @L0S@ ... @L3@ / @L3S@
// become the digest ("sha256:...") and size of the manifest, config and layers.
// The harness packs them as oci-layout, index.json and blobs/sha256/<hex>.

#include "fuzz_util.h"
#include "oci_stage.h"

#include "mbl/archive_ptr.h"
#include "mbl/crypto.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

using namespace mbl;

namespace {

constexpr std::size_t kMaxLayers = 4;
const std::string kSeparator = "\n@@@@\n";

std::vector<std::string> splitParts(const std::string& in)
{
    std::vector<std::string> out;
    std::size_t start = 0;
    while (out.size() < 3 + kMaxLayers) {
        const auto pos = in.find(kSeparator, start);
        if (pos == std::string::npos) {
            break;
        }
        out.push_back(in.substr(start, pos - start));
        start = pos + kSeparator.size();
    }
    out.push_back(in.substr(start));
    return out;
}

void replaceAll(std::string& s, const std::string& from, const std::string& to)
{
    for (auto pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
        s.replace(pos, from.size(), to);
    }
}

struct Blob {
    std::string hex;
    std::string data;
};

Blob blobOf(std::string data)
{
    return Blob{crypto::sha256Hex(data), std::move(data)};
}

void fill(std::string& doc, const std::string& tag, const Blob& b)
{
    replaceAll(doc, "@" + tag + "S@", std::to_string(b.data.size()));
    replaceAll(doc, "@" + tag + "@", "sha256:" + b.hex);
}

la_ssize_t appendTo(struct archive*, void* client, const void* buf, std::size_t n)
{
    static_cast<std::string*>(client)->append(static_cast<const char*>(buf), n);
    return static_cast<la_ssize_t>(n);
}

void addMember(struct archive* a, const std::string& name, const std::string& data)
{
    ArchiveEntry e{archive_entry_new()};
    archive_entry_set_pathname(e.get(), name.c_str());
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), 0644);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(data.size()));
    fuzz::check(archive_write_header(a, e.get()) == ARCHIVE_OK);
    if (!data.empty()) {
        fuzz::check(archive_write_data(a, data.data(), data.size()) == static_cast<la_ssize_t>(data.size()));
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    auto parts = splitParts(std::string(reinterpret_cast<const char*>(data), size));
    while (parts.size() < 3) {
        parts.emplace_back();
    }
    std::vector<Blob> layers;
    for (std::size_t i = 3; i < parts.size(); ++i) {
        if (!fuzz::looksCompressed(parts[i])) {
            fuzz::fixTarChecksums(parts[i]);
        }
        layers.push_back(blobOf(parts[i]));
    }
    auto fillLayers = [&](std::string& doc) {
        for (std::size_t i = 0; i < layers.size(); ++i) {
            fill(doc, "L" + std::to_string(i), layers[i]);
        }
    };
    std::string config = parts[2];
    fillLayers(config);
    const Blob configBlob = blobOf(config);
    std::string manifest = parts[1];
    fill(manifest, "C", configBlob);
    fillLayers(manifest);
    const Blob manifestBlob = blobOf(manifest);
    std::string index = parts[0];
    fill(index, "M", manifestBlob);
    fill(index, "C", configBlob);
    fillLayers(index);

    std::string archive;
    {
        ArchiveWriter w{archive_write_new()};
        archive_write_set_format_pax_restricted(w.get());
        fuzz::check(archive_write_open(w.get(), &archive, nullptr, &appendTo, nullptr) == ARCHIVE_OK);
        addMember(w.get(), "oci-layout", "{\"imageLayoutVersion\": \"1.0.0\"}");
        addMember(w.get(), "index.json", index);
        for (const Blob* b : {&manifestBlob, &configBlob}) {
            addMember(w.get(), "blobs/sha256/" + b->hex, b->data);
        }
        for (const auto& b : layers) {
            addMember(w.get(), "blobs/sha256/" + b.hex, b.data);
        }
        fuzz::check(archive_write_close(w.get()) == ARCHIVE_OK);
    }
    fuzz::stageAndConvert(archive);
    return 0;
}
