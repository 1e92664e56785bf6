#include "csv_table.h"

#include <charconv>
#include <cmath>
#include <fstream>

#include "initless/sys/error.h"

namespace initless::sim {

namespace {
std::vector<std::string> split(const std::string& line) {
    std::vector<std::string> cells;
    std::size_t start = 0;
    for (;;) {
        auto comma = line.find(',', start);
        cells.emplace_back(
            line.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    for (auto& c : cells) {
        while (!c.empty() && (c.back() == '\r' || c.back() == ' ')) c.pop_back();
        while (!c.empty() && c.front() == ' ') c.erase(c.begin());
    }
    return cells;
}
}  // namespace

CsvTable CsvTable::read(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) throw Error(path.string() + ": cannot open");
    CsvTable t;
    t.path_ = path;
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
        ++n;
        if (line.empty() || line == "\r" || line[0] == '#') continue;
        auto cells = split(line);
        if (t.header_.empty()) {
            t.header_ = std::move(cells);
            continue;
        }
        if (cells.size() != t.header_.size())
            throw Error(path.string() + ":" + std::to_string(n) + ": " + std::to_string(cells.size()) +
                        " fields, the header has " + std::to_string(t.header_.size()));
        t.rows_.push_back(std::move(cells));
        t.lines_.push_back(n);
    }
    if (t.header_.empty()) throw Error(path.string() + ": empty file (no header row)");
    return t;
}

bool CsvTable::has_column(std::string_view name) const {
    for (const auto& h : header_)
        if (h == name) return true;
    return false;
}

std::size_t CsvTable::column(std::string_view name) const {
    for (std::size_t i = 0; i < header_.size(); ++i)
        if (header_[i] == name) return i;
    throw Error(path_.string() + ": no column '" + std::string(name) + "' in the header");
}

std::string CsvTable::where(std::size_t r) const {
    return path_.string() + ":" + std::to_string(lines_[r]);
}

double CsvTable::number(std::size_t r, std::size_t col) const {
    const std::string& s = rows_[r][col];
    double v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v))
        throw Error(where(r) + ": column '" + header_[col] + "': '" + s + "' is not a number");
    return v;
}

}  // namespace initless::sim
