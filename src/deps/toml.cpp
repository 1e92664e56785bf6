// toml++'s compiled half (see cmake/dependencies.cmake): its header defines the library's functions
// in the one translation unit that asks for the implementation.
#define TOML_IMPLEMENTATION
#include <toml++/toml.h>
