// SPDX-License-Identifier: Apache-2.0
#pragma once
// Errors carried through the logic of every service: a code that maps 1:1 to an
// org.mbl.Error.* bus name, and a message a field engineer can act on.

#include <string>
#include <utility>

namespace mbl {

enum class ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    Busy,
    SignatureInvalid,
    Incompatible,
    Downgrade,
    NotProvisioned,
    Io,
    NoSpace,
    Timeout,
    Cancelled,
    Failed,
    NotSupported,
    AccessDenied,
};

struct Error {
    ErrorCode code = ErrorCode::Failed;
    // Always a string D-Bus can carry: messages quote text from outside (archive
    // member names, server replies), so the constructor passes them through
    // str::sanitizeUtf8. Otherwise the reply, signal or property would be lost.
    std::string message;

    Error() = default;
    Error(ErrorCode c, std::string msg);

    // "org.mbl.Error.<Name>"
    std::string name() const;
    // "<Name>: message", for logs and CLI output.
    std::string describe() const;
};

// Short name of a code, e.g. "SignatureInvalid".
const char* errorCodeName(ErrorCode code);
// Full bus name of a code, e.g. "org.mbl.Error.SignatureInvalid".
std::string errorName(ErrorCode code);
// Inverse of errorName(); unknown names map to Failed.
ErrorCode errorCodeFromName(const std::string& name);

// Error from the current errno (ENOSPC maps to NoSpace, ENOENT to NotFound,
// EACCES/EPERM to AccessDenied, anything else to Io).
Error errnoError(const std::string& what, int err);

} // namespace mbl
