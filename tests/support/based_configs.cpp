#include "support/based_configs.h"

namespace lintime::testing {

// The fields of HazyResearch's based-360m configuration (train/configs/experiment/reference/
// based-360m.yaml as GPT2Config writes them), with a few GPT-2 bookkeeping keys.
nlohmann::json based_360m_config() {
  return {{"_target_", "based.models.gpt.GPT2MixerConfig"},
          {"model_type", "gpt2"},
          {"architectures", {"GPTLMHeadModel"}},
          {"vocab_size", 50257},
          {"pad_vocab_size_multiple", 8},
          {"n_embd", 1024},
          {"n_layer", 27},
          {"n_head", 16},
          {"n_inner", 2048},
          {"n_positions", 0},
          {"activation_function", "swiglu"},
          {"rms_norm", true},
          {"residual_in_fp32", true},
          {"layer_norm_epsilon", 1e-5},
          {"mlp_fc1_bias", false},
          {"mlp_fc2_bias", false},
          {"qkv_proj_bias", false},
          {"out_proj_bias", false},
          {"rotary_emb_fraction", 1},
          {"resid_pdrop", 0.0},
          {"tie_word_embeddings", true},
          {"alt_mixer_layers", {1, 6, 11, 16, 21}},
          {"alt_mixer_2_layers", {2, 7, 12, 17, 22}},
          {"mixer",
           {{"_target_", "based.models.mixers.convolution.BaseConv"},
            {"l_max", 2048},
            {"use_bias", true},
            {"expand_proj", 4},
            {"kernel_sizes", 3}}},
          {"alt_mixer",
           {{"_target_", "based.models.mixers.linear_attention.LinearAttention"},
            {"l_max", 2048},
            {"feature_map", {{"_target_", "based.models.mixers.linear_attention.TaylorExp"}, {"input_dim", 16}}},
            {"feature_dim", 16},
            {"num_heads", 16}}},
          {"alt_mixer_2",
           {{"_target_", "based.models.mixers.slide_attention.SlidingAttention"},
            {"window_size", 128},
            {"num_heads", 16},
            {"causal", true}}}};
}

// A 4-layer model with one layer of each mixer (and a second conv) at small sizes.
nlohmann::json tiny_based_config() {
  nlohmann::json config = based_360m_config();
  config["vocab_size"] = 37;
  config["n_embd"] = 16;
  config["n_layer"] = 4;
  config["n_head"] = 2;
  config["n_inner"] = 24;
  config["alt_mixer_layers"] = {1};
  config["alt_mixer_2_layers"] = {2};
  config["alt_mixer"]["feature_dim"] = 4;
  config["alt_mixer"]["num_heads"] = 2;
  config["alt_mixer_2"]["window_size"] = 8;
  return config;
}

}  // namespace lintime::testing
