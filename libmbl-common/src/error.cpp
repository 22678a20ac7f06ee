// SPDX-License-Identifier: Apache-2.0
#include "mbl/error.h"

#include <cerrno>
#include <cstring>
#include <iterator>

#include "mbl/strings.h"

namespace mbl {

namespace {
struct NameEntry {
    ErrorCode code;
    const char* name;
};
constexpr NameEntry kNames[] = {
    {ErrorCode::InvalidArgument, "InvalidArgument"},
    {ErrorCode::NotFound, "NotFound"},
    {ErrorCode::AlreadyExists, "AlreadyExists"},
    {ErrorCode::Busy, "Busy"},
    {ErrorCode::SignatureInvalid, "SignatureInvalid"},
    {ErrorCode::Incompatible, "Incompatible"},
    {ErrorCode::Downgrade, "Downgrade"},
    {ErrorCode::NotProvisioned, "NotProvisioned"},
    {ErrorCode::Io, "Io"},
    {ErrorCode::NoSpace, "NoSpace"},
    {ErrorCode::Timeout, "Timeout"},
    {ErrorCode::Cancelled, "Cancelled"},
    {ErrorCode::Failed, "Failed"},
    {ErrorCode::NotSupported, "NotSupported"},
    {ErrorCode::AccessDenied, "AccessDenied"},
};
constexpr const char* kPrefix = "org.mbl.Error.";
} // namespace

const char* errorCodeName(ErrorCode code)
{
    for (const auto& e : kNames) {
        if (e.code == code) {
            return e.name;
        }
    }
    return "Failed";
}

std::string errorName(ErrorCode code)
{
    return std::string(kPrefix) + errorCodeName(code);
}

ErrorCode errorCodeFromName(const std::string& name)
{
    std::string shortName = name;
    if (shortName.rfind(kPrefix, 0) == 0) {
        shortName = shortName.substr(std::strlen(kPrefix));
    }
    for (const auto& e : kNames) {
        if (shortName == e.name) {
            return e.code;
        }
    }
    return ErrorCode::Failed;
}

std::string Error::name() const
{
    return errorName(code);
}

std::string Error::describe() const
{
    return std::string(errorCodeName(code)) + ": " + message;
}

Error::Error(ErrorCode c, std::string msg) : code(c), message(str::sanitizeUtf8(std::move(msg))) {}

Error errnoError(const std::string& what, int err)
{
    ErrorCode code = ErrorCode::Io;
    switch (err) {
    case ENOSPC:
    case EDQUOT:
        code = ErrorCode::NoSpace;
        break;
    case ENOENT:
        code = ErrorCode::NotFound;
        break;
    case EACCES:
    case EPERM:
        code = ErrorCode::AccessDenied;
        break;
    case EEXIST:
        code = ErrorCode::AlreadyExists;
        break;
    case ETIMEDOUT:
        code = ErrorCode::Timeout;
        break;
    default:
        break;
    }
    return Error{code, what + ": " + std::strerror(err)};
}

} // namespace mbl
