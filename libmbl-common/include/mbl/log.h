// SPDX-License-Identifier: Apache-2.0
#pragma once
// Logging for daemons and tools: to the journal when stderr is connected to it
// (JOURNAL_STREAM matches), else one plain line per message on stderr:
// "<level> <daemon>: <message>".

#include <string>

namespace mbl::log {

enum class Level { Debug = 7, Info = 6, Notice = 5, Warning = 4, Error = 3 };

// Name shown in each line (and SYSLOG_IDENTIFIER in the journal).
void init(const std::string& ident);
void setLevel(Level level);
// Parses "debug", "info", "notice", "warning", "error"; false if unknown.
bool parseLevel(const std::string& text, Level& out);

void write(Level level, const std::string& message);

inline void debug(const std::string& m) { write(Level::Debug, m); }
inline void info(const std::string& m) { write(Level::Info, m); }
inline void notice(const std::string& m) { write(Level::Notice, m); }
inline void warning(const std::string& m) { write(Level::Warning, m); }
inline void error(const std::string& m) { write(Level::Error, m); }

} // namespace mbl::log
