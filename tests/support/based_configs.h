// HazyResearch BASED config.json documents for tests: the based-360m fields, and a 4-layer
// model with one layer of each mixer (and a second conv) at small sizes.
#pragma once

#include <nlohmann/json.hpp>

namespace lintime::testing {

nlohmann::json based_360m_config();
nlohmann::json tiny_based_config();

}  // namespace lintime::testing
