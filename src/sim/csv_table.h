// A minimal reader for the trace's and the cost model's CSV files: no quoting (the files have none),
// a header row, '#' comment lines skipped. Errors name file and line.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace initless::sim {

class CsvTable {
  public:
    static CsvTable read(const std::filesystem::path& path);

    const std::vector<std::string>& header() const { return header_; }
    std::size_t rows() const { return rows_.size(); }
    const std::vector<std::string>& row(std::size_t r) const { return rows_[r]; }
    int line(std::size_t r) const { return lines_[r]; }
    // Index of a header column; throws naming the file when it is missing.
    std::size_t column(std::string_view name) const;
    bool has_column(std::string_view name) const;
    // Cell as a number; throws "file:line: column 'x': 'abc' is not a number".
    double number(std::size_t r, std::size_t col) const;
    std::string where(std::size_t r) const;  // "file:line"

  private:
    std::filesystem::path path_;
    std::vector<std::string> header_;
    std::vector<std::vector<std::string>> rows_;
    std::vector<int> lines_;
};

}  // namespace initless::sim
