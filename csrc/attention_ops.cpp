// loomlm._C's attention ops over the paged KV cache: decode rows (one query per sequence) and causal
// prefill chunks, each checked before any work (every block a sequence reads must exist) and split
// over torch's intra-op threads.
#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "model_ops.h"
#include "torch_checks.h"
#include "torch_ops.h"

namespace loomlm::ops {
namespace {

// Every block a sequence reads must exist (no read past the cache). Returns the longest seq_len.
int64_t check_block_tables(const int32_t* lens, const int32_t* tables, int64_t S, int64_t max_blocks,
                           int64_t block_size, int64_t num_blocks) {
  int64_t longest = 0;
  for (int64_t s = 0; s < S; ++s) {
    TORCH_CHECK(lens[s] > 0 && (lens[s] + block_size - 1) / block_size <= max_blocks, "seq_lens[", s, "] = ",
                lens[s], " does not fit its block table");
    for (int64_t b = 0; b < (lens[s] + block_size - 1) / block_size; ++b) {
      const int32_t id = tables[s * max_blocks + b];
      TORCH_CHECK(id >= 0 && id < num_blocks, "block ", id, " of sequence ", s, " is outside the cache");
    }
    longest = std::max<int64_t>(longest, lens[s]);
  }
  return longest;
}

void check_attention_inputs(const torch::Tensor& query, const torch::Tensor& key_cache,
                            const torch::Tensor& value_cache, const torch::Tensor& block_tables,
                            const torch::Tensor& seq_lens, int64_t S) {
  check_float_rows(query, 3, "query");
  check_cache(key_cache, "key_cache");
  check_cache(value_cache, "value_cache");
  const int64_t H = query.size(1), D = query.size(2), kv_heads = key_cache.size(2);
  TORCH_CHECK(query.stride(1) == D && key_cache.size(3) == D && key_cache.sizes() == value_cache.sizes(),
              "query [rows, heads, head_dim] (heads contiguous) and the caches must agree on head_dim");
  TORCH_CHECK(key_cache.scalar_type() == value_cache.scalar_type(), "the key and value caches differ in dtype");
  TORCH_CHECK(H % kv_heads == 0, "query heads ", H, " are not a multiple of kv heads ", kv_heads);
  TORCH_CHECK(block_tables.scalar_type() == torch::kInt32 && block_tables.is_contiguous() && block_tables.dim() == 2 &&
                  block_tables.size(0) == S,
              "block_tables must be contiguous int32 [", S, ", max_blocks]");
  TORCH_CHECK(seq_lens.scalar_type() == torch::kInt32 && seq_lens.is_contiguous() && seq_lens.numel() == S,
              "seq_lens must be contiguous int32 [", S, "]");
}

constexpr int64_t kPrefillRowBlock = 32;  // query rows per prefill item: their keys are copied once

}  // namespace

torch::Tensor decode_attention(const torch::Tensor& query, const torch::Tensor& key_cache,
                               const torch::Tensor& value_cache, const torch::Tensor& block_tables,
                               const torch::Tensor& seq_lens, double scale) {
  const int64_t S = query.size(0), H = query.size(1), D = query.size(2);
  check_attention_inputs(query, key_cache, value_cache, block_tables, seq_lens, S);
  const int64_t block_size = key_cache.size(1), kv_heads = key_cache.size(2);
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  const int32_t* tables = block_tables.data_ptr<int32_t>();
  const int64_t max_blocks = block_tables.size(1);
  const int64_t longest = check_block_tables(lens, tables, S, max_blocks, block_size, key_cache.size(0));
  auto out = torch::empty({S, H, D}, query.options());
  const int64_t group = H / kv_heads;
  const float* q = query.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const bool is_bf16 = key_cache.scalar_type() == torch::kBFloat16;
  const bool vector = D % 8 == 0 && loomlm::avx2::attention_supported();
  TORCH_CHECK(vector || !is_bf16, "bfloat16 caches need a CPU with AVX2 and FMA and head_dim a multiple of 8");
  if (vector) {
    // Items of whole sequences (every kv head: whole cache rows stream) once there are enough to
    // keep the threads busy; otherwise one kv head each.
    const int64_t heads_per_item = S >= 2 * at::get_num_threads() ? kv_heads : 1;
    const int64_t items_per_seq = kv_heads / heads_per_item;
    with_cache_type(key_cache, [&](auto tag) {
      using T = decltype(tag);
      const T* keys = cache_data<T>(key_cache);
      const T* values = cache_data<T>(value_cache);
      at::parallel_for(0, S * items_per_seq, 1, [&](int64_t begin, int64_t end) {
        const std::unique_ptr<float[]> scores(new float[heads_per_item * group * longest]);
        for (int64_t item = begin; item < end; ++item) {
          const int64_t s = item / items_per_seq, h0 = item % items_per_seq * heads_per_item;
          loomlm::avx2::UpcomingRows next;
          if (item + 1 < end) {
            const int64_t ns = (item + 1) / items_per_seq;
            next = {tables + ns * max_blocks, lens[ns], (item + 1) % items_per_seq * heads_per_item};
          }
          loomlm::avx2::decode_attention_heads(q + s * query.stride(0), keys, values, tables + s * max_blocks,
                                               lens[s], block_size, kv_heads, h0, h0 + heads_per_item, group, D,
                                               static_cast<float>(scale), scores.get(), o + s * H * D, next);
        }
      });
    });
    return out;
  }
  const float* keys = key_cache.data_ptr<float>();
  const float* values = value_cache.data_ptr<float>();
  at::parallel_for(0, S * kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(group * longest);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t s = item / kv_heads, kvh = item % kv_heads;
      loomlm::decode_attention_item(q + s * query.stride(0) + kvh * group * D, keys, values, tables + s * max_blocks,
                                    lens[s], block_size, kv_heads, kvh, group, D, static_cast<float>(scale),
                                    scores.data(), o + (s * H + kvh * group) * D);
    }
  });
  return out;
}

bool prefill_attention_supported() { return loomlm::avx2::attention_supported(); }

torch::Tensor prefill_attention(const torch::Tensor& query, const torch::Tensor& key_cache,
                                const torch::Tensor& value_cache, const torch::Tensor& block_tables,
                                const torch::Tensor& seq_lens, const torch::Tensor& query_start_loc, double scale) {
  TORCH_CHECK(prefill_attention_supported(), "this CPU cannot run the prefill attention kernel (it needs AVX2 and FMA)");
  const int64_t T = query.size(0), H = query.size(1), D = query.size(2), S = seq_lens.numel();
  check_attention_inputs(query, key_cache, value_cache, block_tables, seq_lens, S);
  TORCH_CHECK(D % 8 == 0, "head_dim must be a multiple of 8, got ", D);
  TORCH_CHECK(query_start_loc.scalar_type() == torch::kInt32 && query_start_loc.is_contiguous() &&
                  query_start_loc.numel() == S + 1,
              "query_start_loc must be contiguous int32 [", S + 1, "]");
  const int64_t block_size = key_cache.size(1), kv_heads = key_cache.size(2), group = H / kv_heads;
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  const int32_t* starts = query_start_loc.data_ptr<int32_t>();
  const int32_t* tables = block_tables.data_ptr<int32_t>();
  const int64_t max_blocks = block_tables.size(1);
  const int64_t longest = check_block_tables(lens, tables, S, max_blocks, block_size, key_cache.size(0));
  TORCH_CHECK(starts[0] >= 0 && starts[S] <= T, "query_start_loc must lie within the ", T, " query rows");
  struct Item {  // a decode row covers every kv head (whole cache rows), a prefill block one
    int64_t seq, kv_head, row_begin, row_end, cost;
  };
  std::vector<Item> items;
  int64_t total_cost = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t q_len = starts[s + 1] - starts[s];
    TORCH_CHECK(q_len >= 0 && q_len <= lens[s], "sequence ", s, " has ", q_len, " query rows for ", lens[s],
                " positions");
    if (q_len == 1) {
      items.push_back({s, 0, 0, 1, lens[s] * kv_heads}), total_cost += lens[s] * kv_heads;
      continue;
    }
    for (int64_t r0 = 0; r0 < q_len; r0 += kPrefillRowBlock) {
      const int64_t r1 = std::min(q_len, r0 + kPrefillRowBlock);
      const int64_t cost = (r1 - r0) * (lens[s] - q_len + r1);  // rows x keys seen, about
      for (int64_t h = 0; h < kv_heads; ++h) items.push_back({s, h, r0, r1, cost}), total_cost += cost;
    }
  }
  auto out = torch::zeros({T, H, D}, query.options());
  if (items.empty()) return out;
  // Threads take runs of items of about equal cost (a long chunk's late rows see many more keys).
  const int64_t num_threads = std::min<int64_t>(at::get_num_threads(), static_cast<int64_t>(items.size()));
  std::vector<int64_t> bounds(num_threads + 1, static_cast<int64_t>(items.size()));
  bounds[0] = 0;
  for (int64_t i = 0, t = 1, prefix = 0; i < static_cast<int64_t>(items.size()) && t < num_threads; ++i) {
    prefix += items[i].cost;
    while (t < num_threads && prefix * num_threads >= total_cost * t) bounds[t++] = i + 1;
  }
  const float* q = query.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t row_stride = query.stride(0), out_stride = H * D;
  const auto is_decode_row = [&](const Item& it) { return starts[it.seq + 1] - starts[it.seq] == 1; };
  with_cache_type(key_cache, [&](auto tag) {
    using T = decltype(tag);
    const T* keys = cache_data<T>(key_cache);
    const T* values = cache_data<T>(value_cache);
    at::parallel_for(0, num_threads, 1, [&](int64_t begin, int64_t end) {
      // Also holds a decode row's H * seq_len scores. Not zeroed: the kernels write every float they
      // read (a long context's scratch is tens of MB, once per layer).
      const std::unique_ptr<float[]> scratch(new float[std::max(
          loomlm::avx2::prefill_attention_scratch(kPrefillRowBlock, group, D, longest), H * longest)]);
      for (int64_t t = begin; t < end; ++t) {
        for (int64_t i = bounds[t]; i < bounds[t + 1]; ++i) {
          const Item& it = items[i];
          const int64_t first_row = starts[it.seq];
          if (is_decode_row(it)) {  // every kv head, no key copy
            loomlm::avx2::UpcomingRows next;
            if (i + 1 < bounds[t + 1] && is_decode_row(items[i + 1]))
              next = {tables + items[i + 1].seq * max_blocks, lens[items[i + 1].seq], 0};
            loomlm::avx2::decode_attention_heads(q + first_row * row_stride, keys, values, tables + it.seq * max_blocks,
                                                 lens[it.seq], block_size, kv_heads, 0, kv_heads, group, D,
                                                 static_cast<float>(scale), scratch.get(), o + first_row * out_stride,
                                                 next);
            continue;
          }
          loomlm::avx2::prefill_attention_item(
              q + first_row * row_stride + it.kv_head * group * D, row_stride, keys, values,
              tables + it.seq * max_blocks, lens[it.seq], starts[it.seq + 1] - first_row, it.row_begin, it.row_end,
              block_size, kv_heads, it.kv_head, group, D, static_cast<float>(scale), scratch.get(),
              o + first_row * out_stride + it.kv_head * group * D, out_stride);
        }
      }
    });
  });
  return out;
}

}  // namespace loomlm::ops
