// Replays inputs through a libFuzzer harness without libFuzzer, so that every
// seed and every minimised finding is a regression test of the normal (gcc,
// ASan+UBSan) build. Arguments are files or folders of files (not recursive,
// in name order). A harness signals a finding by aborting, as under libFuzzer.
// Exit 0 when at least one input was replayed; 1 when none was found.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

bool replay(const std::filesystem::path& file)
{
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        std::fprintf(stderr, "replay: cannot read %s\n", file.c_str());
        return false;
    }
    const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::printf("replay: %s (%zu bytes)\n", file.c_str(), data.size());
    std::fflush(stdout); // the name is on record if the harness aborts
    (void)LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
    return true;
}

} // namespace

int main(int argc, char** argv)
{
    std::size_t count = 0;
    for (int i = 1; i < argc; ++i) {
        const std::filesystem::path arg(argv[i]);
        std::error_code ec;
        if (std::filesystem::is_directory(arg, ec)) {
            std::vector<std::filesystem::path> files;
            for (const auto& e : std::filesystem::directory_iterator(arg)) {
                if (e.is_regular_file() && e.path().filename().string().front() != '.') {
                    files.push_back(e.path());
                }
            }
            std::sort(files.begin(), files.end());
            for (const auto& f : files) {
                count += replay(f) ? 1 : 0;
            }
        } else if (std::filesystem::is_regular_file(arg, ec)) {
            count += replay(arg) ? 1 : 0;
        } else {
            std::fprintf(stderr, "replay: %s is neither a file nor a folder\n", argv[i]);
            return 1;
        }
    }
    std::printf("replay: %zu inputs, no finding\n", count);
    return count > 0 ? 0 : 1;
}
