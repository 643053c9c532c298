// A registered op's typed handle, to call it through the dispatcher (so that the backend's
// kernel, a fake kernel under tracing, or autograd runs, as the call's tensors decide).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

namespace lintime::ops {

template <typename Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

}  // namespace lintime::ops
