// Policies by name, for the CLI (`initless sim --policy`, later `initless serve`): every name here
// builds a fresh KeepAlivePolicy with its default configuration; an unknown name is an error that lists
// the known ones.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "initless/policy/policy.h"

namespace initless::policy {

const std::vector<std::string>& policy_names();
std::unique_ptr<KeepAlivePolicy> make_policy(std::string_view name);

}  // namespace initless::policy
