// SPDX-License-Identifier: Apache-2.0
#pragma once
// The openssl CLI as the identity unit tests run it: an independent check of
// what the service signs and issues (openssl dgst -verify, x509, req).

#include "mbl/process.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

namespace mbl::test {

// `openssl ARGS...`; fails the test when it cannot be run at all (its exit status is the caller's to check).
inline RunResult openssl(const std::vector<std::string>& args)
{
    std::vector<std::string> argv = {"openssl"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = mbl::run(argv);
    REQUIRE(r);
    return *r;
}

} // namespace mbl::test
