// Supernode description files: reading and writing a dev::Topology as JSON text.
//
// A description file is JSON against the FlatBuffers schema firmware-sim/description.fbs
// (which documents every field and its unit). Reading refuses, with a Status whose message
// starts with the file's origin and names the field:
//   - text that is not JSON of that schema (syntax, a field set twice, a field the schema
//     does not know, a number out of its type's range): kParseError,
//     "two_node.json:14:23: unknown field: bandwdith_gbps";
//   - a required field left out: kInvalidArgument, "two_node.json: npus[3].near_cpu: missing";
//   - a version newer than kDescriptionVersion: kUnsupported;
//   - a description that breaks a rule of firmware-sim/validate.h: kInvalidArgument,
//     "two_node.json: links[12].b: switch 999 does not exist (there are 15 switches)".
// A Topology returned by any function here has been validated and finalize()d.
//
// Thread-safety: every function is reentrant (no shared state). All functions block only on
// reading the file they are given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/base/status.h"
#include "runtime/device/topology.h"

namespace moe::sim {

// The schema version this build reads and writes. Files with a higher version are refused.
inline constexpr uint32_t kDescriptionVersion = 1;
// The largest description file read (a full cm384 description is about 0.5 MiB).
inline constexpr size_t kMaxDescriptionBytes = size_t{64} << 20;

// Parses `json_text` (a whole description) into a validated, finalized Topology. `origin`
// names the text in messages (a path, "<stdin>", a preset name).
[[nodiscard]] StatusOr<dev::Topology> parse_description_json(std::string_view json_text,
                                                             std::string_view origin);

// Reads and parses the description file at `path`. A missing or unreadable file is
// kNotFound / kInvalidArgument naming the path and the system's reason; a file larger than
// kMaxDescriptionBytes is kOutOfRange.
[[nodiscard]] StatusOr<dev::Topology> load_description_file(const std::string& path);

// A preset name (presets.h: cm384, n8, n16, n64) or else the path of a description file.
// When it is neither, kNotFound listing the presets.
[[nodiscard]] StatusOr<dev::Topology> load_description(std::string_view name_or_path);

// The description as JSON text (version kDescriptionVersion), one list entry per line, so
// that parse_description_json(description_to_json(t)) gives back exactly `t` for any valid
// topology (numbers are written in their shortest exact form). An invalid topology is
// written as it is (non-finite numbers as nan / inf, which the reader accepts and the
// validator refuses), so a rejected machine can still be inspected.
std::string description_to_json(const dev::Topology& topology);

// A few lines a person reads: name, nodes, NPUs and dies, CPUs, planes, switches by level,
// links, per-NPU fabric bandwidth, HBM, compute. Precondition: `topology` is finalized.
std::string describe_topology(const dev::Topology& topology);

}  // namespace moe::sim
