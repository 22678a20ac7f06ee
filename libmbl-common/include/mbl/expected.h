// SPDX-License-Identifier: Apache-2.0
#pragma once
// Expected<T>: a value or an mbl::Error, the return type of fallible logic.
// A small C++17 stand-in for std::expected; `Expected<void>` carries no value.

#include "mbl/error.h"

#include <cassert>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

namespace mbl {

struct Unexpected {
    Error error;
};

inline Unexpected unexpected(ErrorCode code, std::string message)
{
    return Unexpected{Error{code, std::move(message)}};
}
inline Unexpected unexpected(Error e)
{
    return Unexpected{std::move(e)};
}

template <typename T>
class [[nodiscard]] Expected {
public:
    Expected(const T& v) : v_(std::in_place_index<0>, v) {}
    Expected(T&& v) : v_(std::in_place_index<0>, std::move(v)) {}
    template <typename U, typename = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                                      !std::is_same_v<std::decay_t<U>, Expected> &&
                                                      !std::is_same_v<std::decay_t<U>, Unexpected>>>
    Expected(U&& v) : v_(std::in_place_index<0>, T(std::forward<U>(v)))
    {
    }
    Expected(Unexpected u) : v_(std::in_place_index<1>, std::move(u.error)) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() &
    {
        assert(ok());
        return std::get<0>(v_);
    }
    const T& value() const&
    {
        assert(ok());
        return std::get<0>(v_);
    }
    T&& value() &&
    {
        assert(ok());
        return std::get<0>(std::move(v_));
    }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const
    {
        assert(!ok());
        return std::get<1>(v_);
    }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Expected<void> {
public:
    Expected() = default;
    Expected(Unexpected u) : err_(std::move(u.error)) {}

    bool ok() const { return !err_.has_value(); }
    explicit operator bool() const { return ok(); }
    const Error& error() const
    {
        assert(!ok());
        return *err_;
    }

private:
    std::optional<Error> err_;
};

using Status = Expected<void>;

} // namespace mbl
