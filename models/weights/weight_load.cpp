// Loading ModelWeights from safetensors: find the files (one file, a directory of shards, an
// index), map and validate each, then match every spec to a source tensor and check its dtype
// and shape. Data is not read here; reads go through the mappings on demand.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <unordered_set>

#include "models/weights/json_parse.h"
#include "models/weights/weight_store.h"
#include "models/weights/weight_store_source.h"
#include "runtime/base/check.h"

namespace moe::models {
namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr uint64_t kMaxIndexBytes = 64ull << 20;

bool is_directory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The shard files named by the index's weight map (in first-mention order), after checking
// they are plain file names.
Status read_index(const std::string& dir, std::vector<std::string>* files,
                  std::vector<std::pair<std::string, std::string>>* weight_map) {
  const std::string path = dir + "/" + kIndexName;
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(StatusCode::kNotFound, "cannot read '%s'", path.c_str());
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxIndexBytes)
      return make_error(StatusCode::kParseError, "'%s': larger than %llu bytes", path.c_str(),
                        static_cast<unsigned long long>(kMaxIndexBytes));
  }
  StatusOr<JsonValue> json = parse_json(text);
  if (!json.ok())
    return make_error(StatusCode::kParseError, "'%s': %s", path.c_str(),
                      json.status().message().c_str());
  const JsonValue* map = json->is_object() ? json->find("weight_map") : nullptr;
  if (map == nullptr || !map->is_object())
    return make_error(StatusCode::kParseError, "'%s': expected an object with a \"weight_map\" "
                      "object", path.c_str());
  std::unordered_set<std::string> seen;
  for (const auto& [tensor, file] : map->members) {
    if (!file.is_string() || file.text.empty() || file.text.find('/') != std::string::npos ||
        file.text == "." || file.text == "..")
      return make_error(StatusCode::kParseError,
                        "'%s': weight_map[\"%s\"]: expected a file name in the directory",
                        path.c_str(), tensor.c_str());
    if (seen.insert(file.text).second) files->push_back(file.text);
    weight_map->emplace_back(tensor, file.text);
  }
  return Status();
}

Status list_shards(const std::string& dir, std::vector<std::string>* files) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return make_error(StatusCode::kNotFound, "cannot list '%s'", dir.c_str());
  while (const dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (ends_with(name, ".safetensors") && name[0] != '.') files->push_back(name);
  }
  closedir(d);
  std::sort(files->begin(), files->end());
  if (files->empty())
    return make_error(StatusCode::kNotFound, "no .safetensors files in '%s'", dir.c_str());
  return Status();
}

struct Location {
  size_t file, tensor;
};

}  // namespace

StatusOr<ModelWeights> ModelWeights::load(const ModelConfig& config, const std::string& path,
                                          const LoadOptions& options) {
  MOE_TRY_ASSIGN(ModelWeights w, random(config, 0));
  MOE_TRY(w.load_sources(path, options));
  return w;
}

Status ModelWeights::load_sources(const std::string& path, const LoadOptions& options) {
  std::vector<std::string> paths;
  std::vector<std::pair<std::string, std::string>> weight_map;
  if (is_directory(path)) {
    std::vector<std::string> names;
    struct stat st;
    if (stat((path + "/" + kIndexName).c_str(), &st) == 0)
      MOE_TRY(read_index(path, &names, &weight_map));
    else
      MOE_TRY(list_shards(path, &names));
    for (const std::string& n : names) paths.push_back(path + "/" + n);
  } else {
    paths.push_back(path);
  }

  std::unordered_map<std::string, Location> where;
  for (const std::string& p : paths) {
    MOE_TRY_ASSIGN(SafetensorsFile f, SafetensorsFile::open(p));
    const size_t fi = files_.size();
    for (size_t ti = 0; ti < f.tensors().size(); ++ti) {
      const auto [it, fresh] = where.emplace(f.tensors()[ti].name, Location{fi, ti});
      if (!fresh)
        return make_error(StatusCode::kInvalidArgument,
                          "tensor '%s' is in both '%s' and '%s'", f.tensors()[ti].name.c_str(),
                          files_[it->second.file].path().c_str(), p.c_str());
    }
    files_.push_back(std::move(f));
  }
  for (const auto& [tensor, file] : weight_map) {
    const auto it = where.find(tensor);
    if (it == where.end() || files_[it->second.file].path() != path + "/" + file)
      return make_error(StatusCode::kNotFound,
                        "'%s/%s' names tensor '%s' in '%s', which does not hold it",
                        path.c_str(), kIndexName, tensor.c_str(), file.c_str());
  }

  // Match every spec.
  std::vector<Source> sources(specs_.size());
  std::unordered_set<std::string> used;
  std::string first_problem;
  size_t problems = 0;
  auto problem = [&](const std::string& what) {
    if (problems++ == 0) first_problem = what;
  };
  for (size_t i = 0; i < specs_.size(); ++i) {
    const TensorSpec& spec = specs_[i];
    const std::string expected = strformat("%s %s", std::string(dtype_name(spec.dtype)).c_str(),
                                           shape_to_string(spec.shape).c_str());
    const auto it = where.find(spec.name);
    if (it == where.end()) {
      problem(strformat("tensor '%s' (expected %s) is missing", spec.name.c_str(),
                        expected.c_str()));
      continue;
    }
    const TensorInfo& info = files_[it->second.file].tensors()[it->second.tensor];
    const std::string found = strformat("%s %s", std::string(dtype_name(info.dtype)).c_str(),
                                        shape_to_string(info.shape).c_str());
    const std::string in_file = files_[it->second.file].path();
    used.insert(spec.name);
    sources[i].file = it->second.file;
    sources[i].tensor = it->second.tensor;
    if (info.shape != spec.shape) {
      problem(strformat("tensor '%s': shape expected %s, found %s in '%s'", spec.name.c_str(),
                        expected.c_str(), found.c_str(), in_file.c_str()));
      continue;
    }
    const bool convertible =
        info.dtype == DType::kBf16 || info.dtype == DType::kF16 || info.dtype == DType::kF32;
    if (convertible) continue;
    if (info.dtype == DType::kI8 && spec.dtype == DType::kBf16 && spec.shape.size() == 2) {
      const std::string scale_name = int8_scale_name(spec.name);
      const auto s = where.find(scale_name);
      const std::vector<uint64_t> scale_shape = {spec.shape[0]};
      if (s == where.end()) {
        problem(strformat("tensor '%s' is I8 but its scale '%s' (F32 [%llu]) is missing",
                          spec.name.c_str(), scale_name.c_str(),
                          static_cast<unsigned long long>(spec.shape[0])));
        continue;
      }
      const TensorInfo& si = files_[s->second.file].tensors()[s->second.tensor];
      if (si.dtype != DType::kF32 || si.shape != scale_shape) {
        problem(strformat("scale '%s': expected F32 %s, found %s %s", scale_name.c_str(),
                          shape_to_string(scale_shape).c_str(),
                          std::string(dtype_name(si.dtype)).c_str(),
                          shape_to_string(si.shape).c_str()));
        continue;
      }
      used.insert(scale_name);
      sources[i].has_scale = true;
      sources[i].scale_file = s->second.file;
      sources[i].scale_tensor = s->second.tensor;
      continue;
    }
    problem(strformat("tensor '%s': dtype expected %s (or BF16, F16, F32%s), found %s in '%s'",
                      spec.name.c_str(), expected.c_str(),
                      spec.dtype == DType::kBf16 && spec.shape.size() == 2 ? ", I8 + scale" : "",
                      found.c_str(), in_file.c_str()));
  }
  if (problems > 0)
    return make_error(StatusCode::kInvalidArgument, "loading model '%s' from '%s': %s%s",
                      config_.name.c_str(), path.c_str(), first_problem.c_str(),
                      problems > 1 ? strformat(" (and %zu more problems)", problems - 1).c_str()
                                   : "");
  std::string first_extra;
  for (const auto& [name, loc] : where) {
    if (used.count(name) != 0) continue;
    if (extra_tensors_++ == 0 || name < first_extra) first_extra = name;
  }
  if (extra_tensors_ > 0) {
    if (options.refuse_extra_tensors)
      return make_error(StatusCode::kInvalidArgument,
                        "loading model '%s' from '%s': %zu tensors not in the model, e.g. '%s'",
                        config_.name.c_str(), path.c_str(), extra_tensors_, first_extra.c_str());
    MOE_WARN("loading model '%s' from '%s': ignoring %zu tensors not in the model (e.g. '%s')",
             config_.name.c_str(), path.c_str(), extra_tensors_, first_extra.c_str());
  }
  sources_ = std::move(sources);
  return Status();
}

}  // namespace moe::models
