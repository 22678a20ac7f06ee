// SPDX-License-Identifier: Apache-2.0
#include "mbl/error.h"
#include "mbl/error_names.h"
#include "mbl/expected.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>

#include <cerrno>

using namespace mbl;

TEST_CASE("every error code has an org.mbl.Error name that maps back to it")
{
    for (ErrorCode c : {ErrorCode::InvalidArgument, ErrorCode::NotFound, ErrorCode::AlreadyExists, ErrorCode::Busy,
                        ErrorCode::SignatureInvalid, ErrorCode::Incompatible, ErrorCode::Downgrade,
                        ErrorCode::NotProvisioned, ErrorCode::Io, ErrorCode::NoSpace, ErrorCode::Timeout,
                        ErrorCode::Cancelled, ErrorCode::Failed, ErrorCode::NotSupported, ErrorCode::AccessDenied}) {
        const std::string name = errorName(c);
        CHECK(name.rfind("org.mbl.Error.", 0) == 0);
        CHECK(errorCodeFromName(name) == c);
    }
    CHECK(errorName(ErrorCode::SignatureInvalid) == errors::kSignatureInvalid);
    CHECK(errorName(ErrorCode::Downgrade) == errors::kDowngrade);
    CHECK(errorCodeFromName("org.example.Unknown") == ErrorCode::Failed);
}

TEST_CASE("errno values map to the named errors a user can act on")
{
    CHECK(errnoError("write x", ENOSPC).code == ErrorCode::NoSpace);
    CHECK(errnoError("open x", ENOENT).code == ErrorCode::NotFound);
    CHECK(errnoError("open x", EACCES).code == ErrorCode::AccessDenied);
    CHECK(errnoError("read x", EIO).code == ErrorCode::Io);
    CHECK(errnoError("open x", ENOENT).message.find("open x") != std::string::npos);
}

TEST_CASE("error messages are text D-Bus can carry: bytes from outside that are not UTF-8 become '?'")
{
    // Found by tests/fuzz: messages quote archive member names and server
    // replies, and sd-bus cannot send a reply, signal or property holding
    // malformed UTF-8 (or a noncharacter): the caller never got an answer.
    const std::string hostile = "member 'a\xff\xc3(\xed\xa0\x80\xef\xbf\xbe\xef\xb7\x90' refused";
    // Byte by byte: \xff, a lone lead byte, a surrogate, U+FFFE, U+FDD0.
    const std::string shown = "member 'a" + std::string(2, '?') + "(" + std::string(9, '?') + "' refused";
    CHECK(Error(ErrorCode::InvalidArgument, hostile).message == shown);
    CHECK(unexpected(ErrorCode::InvalidArgument, hostile).error.message == shown);
    CHECK(errnoError("open \xfe", ENOENT).message.rfind("open ?: ", 0) == 0);
    const std::string text = "caf\xc3\xa9, \xe4\xb8\xad, \xf0\x9f\x98\x80, tab\t, U+FFFD \xef\xbf\xbd";
    CHECK(Error(ErrorCode::Failed, text).message == text);
    CHECK(str::sanitizeUtf8(hostile) == shown);
}

TEST_CASE("quoted outside text has no control characters and is never cut inside a character")
{
    CHECK(str::quotable("a\nb\x7f\xff") == "a?b??");
    CHECK(str::quotable("\xc3\xa9\xc3\xa9\xc3\xa9", 3) == "\xc3\xa9\u2026");
    CHECK(str::quotable("\xc3\xa9\xc3\xa9", 4) == "\xc3\xa9\xc3\xa9");
    CHECK(str::quotable("abcdef", 4) == "abcd\u2026");
    CHECK(str::quotable("ab\xef\xbf\xbe", 80) == "ab???");
}

namespace {
Expected<int> half(int v)
{
    if (v % 2 != 0) {
        return unexpected(ErrorCode::InvalidArgument, "odd value " + std::to_string(v));
    }
    return v / 2;
}
} // namespace

TEST_CASE("Expected carries either a value or an error")
{
    auto ok = half(4);
    REQUIRE(ok);
    CHECK(*ok == 2);
    auto bad = half(3);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == ErrorCode::InvalidArgument);
    CHECK(bad.error().describe() == "InvalidArgument: odd value 3");

    Status s;
    CHECK(s.ok());
    Status f = unexpected(ErrorCode::Busy, "an install is running");
    REQUIRE_FALSE(f);
    CHECK(f.error().name() == "org.mbl.Error.Busy");
}

#include "mbl/crypto.h"

TEST_CASE("SHA-256 through EVP matches the known digest, streamed or whole")
{
    CHECK(mbl::crypto::sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    mbl::crypto::Sha256 h;
    h.update("a", 1);
    h.update("bc", 2);
    CHECK(h.finishHex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
