// SPDX-License-Identifier: Apache-2.0
#pragma once
// Runs asynchronous steps one after the other: step(i, next) for i = 0..n-1,
// each calling next(Status) when it is done; the first error, or the end,
// goes to done. A step that never calls next (its callback was dropped because
// the operation moved on) ends the chain and frees it.

#include "peers.h"

#include <cstddef>
#include <functional>
#include <memory>

namespace mbl::coordinator {

inline void sequence(std::size_t n, std::function<void(std::size_t, Done)> step, Done done)
{
    auto run = std::make_shared<std::function<void(std::size_t)>>();
    // The chain holds itself only weakly; each pending `next` holds it strongly.
    *run = [n, step = std::move(step), done = std::move(done),
            weak = std::weak_ptr<std::function<void(std::size_t)>>(run)](std::size_t i) {
        if (i == n) {
            done({});
            return;
        }
        auto self = weak.lock();
        step(i, [self, i, done](Status st) {
            if (!st) {
                done(st);
                return;
            }
            (*self)(i + 1);
        });
    };
    (*run)(0);
}

} // namespace mbl::coordinator
