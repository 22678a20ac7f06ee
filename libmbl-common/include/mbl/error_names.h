// SPDX-License-Identifier: Apache-2.0
#pragma once
// The one list of bus error names every service and client uses.

namespace mbl::errors {

inline constexpr const char* kInvalidArgument = "org.mbl.Error.InvalidArgument";
inline constexpr const char* kNotFound = "org.mbl.Error.NotFound";
inline constexpr const char* kAlreadyExists = "org.mbl.Error.AlreadyExists";
inline constexpr const char* kBusy = "org.mbl.Error.Busy";
inline constexpr const char* kSignatureInvalid = "org.mbl.Error.SignatureInvalid";
inline constexpr const char* kIncompatible = "org.mbl.Error.Incompatible";
inline constexpr const char* kDowngrade = "org.mbl.Error.Downgrade";
inline constexpr const char* kNotProvisioned = "org.mbl.Error.NotProvisioned";
inline constexpr const char* kIo = "org.mbl.Error.Io";
inline constexpr const char* kNoSpace = "org.mbl.Error.NoSpace";
inline constexpr const char* kTimeout = "org.mbl.Error.Timeout";
inline constexpr const char* kCancelled = "org.mbl.Error.Cancelled";
inline constexpr const char* kFailed = "org.mbl.Error.Failed";
inline constexpr const char* kNotSupported = "org.mbl.Error.NotSupported";
inline constexpr const char* kAccessDenied = "org.mbl.Error.AccessDenied";

} // namespace mbl::errors
