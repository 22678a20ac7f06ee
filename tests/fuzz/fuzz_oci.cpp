// SPDX-License-Identifier: Apache-2.0
// An app archive as InstallApp receives it (an fd): an OCI image layout or an
// OCI runtime bundle, possibly compressed, fed raw. Blob digests make random
// image layouts stop at the digest check, so this harness mostly covers the
// outer archive, runtime bundles (config.json + rootfs/, no digests) and the
// rootfs writer; fuzz_oci_layout covers what lies behind valid digests.

#include "fuzz_util.h"
#include "oci_stage.h"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    std::string archive(reinterpret_cast<const char*>(data), size);
    if (!mbl::fuzz::looksCompressed(archive)) {
        mbl::fuzz::fixTarChecksums(archive);
    }
    mbl::fuzz::stageAndConvert(archive);
    return 0;
}
