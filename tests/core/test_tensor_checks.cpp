// The op-binding checks produce messages naming the tensor, its expected and actual shape.
#include "core/tensor_checks.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "support/test_support.h"

namespace {

using lintime::testing::error_of;

TEST(TensorChecks, ShapeMismatchNamesTensorAndDims) {
  auto k = at::zeros({2, 64, 4});
  auto message = error_of([&] {
    lintime::check_shape("lintime::gsa_chunk", "k", k, {{"B", 2}, {"T", 64}, {"H", 4}, {"K", 32}});
  });
  EXPECT_NE(message.find("lintime::gsa_chunk: k must have shape [B, T, H, K] = [2, 64, 4, 32], got [2, 64, 4]"),
            std::string::npos) << message;
}

TEST(TensorChecks, AcceptsMatchingShapeAndWildcards) {
  auto k = at::zeros({2, 64, 4, 32});
  EXPECT_NO_THROW(lintime::check_shape("op", "k", k, {{"B", 2}, {"T", -1}, {"H", 4}, {"K", 32}}));
}

TEST(TensorChecks, CuSeqlensValidation) {
  EXPECT_EQ(lintime::check_cu_seqlens("op", at::tensor({0, 3, 10}, at::kLong), 1, 10), 2);
  EXPECT_NE(error_of([] { lintime::check_cu_seqlens("op", at::tensor({0, 5, 3}, at::kLong), 1, 3); })
                .find("non-decreasing"), std::string::npos);
  EXPECT_NE(error_of([] { lintime::check_cu_seqlens("op", at::tensor({0, 5}, at::kLong), 2, 5); })
                .find("batch size must be 1"), std::string::npos);
  EXPECT_NE(error_of([] { lintime::check_cu_seqlens("op", at::tensor({0, 4}, at::kLong), 1, 5); })
                .find("must end at T = 5"), std::string::npos);
}

}  // namespace
