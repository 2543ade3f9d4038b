// loomlm._C's lora_slots_apply: checks every index of the step's plan before any work, then splits the
// slot groups over torch's threads by their multiply-adds. A group bigger than half a thread's share
// (one adapter with all the step's tokens, or a prefill chunk) is cut into runs of tokens, so one
// adapter does not run on one core while the other waits.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "lora_ops.h"
#include "quant_isa.h"
#include "torch_checks.h"
#include "torch_ops.h"

namespace loomlm::ops {
namespace {

constexpr int64_t kMinPieceTokens = 4;  // a run of tokens fills the int8 kernel's register tile

struct Piece {
  int64_t group, begin, end;  // tokens token_ids[begin:end] of slot group `group`
  int64_t cost;               // multiply-adds
};

}  // namespace

void lora_slots_apply(const torch::Tensor& x, torch::Tensor& out, const torch::Tensor& rows,
                      const torch::Tensor& token_ids, const torch::Tensor& starts, const torch::Tensor& info,
                      const c10::optional<torch::Tensor>& scales, const std::string& isa,
                      bool int8_activations) {
  check_float_rows(x, 2, "x");
  check_float_rows(out, 2, "out");
  const bool int8 = rows.scalar_type() == torch::kInt8;
  TORCH_CHECK(rows.device().is_cpu() && rows.dim() == 2 && rows.is_contiguous() &&
                  (int8 || rows.scalar_type() == torch::kFloat32),
              "rows must be contiguous float32 or int8 [slots, row size], got ", rows.scalar_type(), " ",
              rows.sizes());
  TORCH_CHECK(out.size(0) == x.size(0), "out and x must have the same rows");
  TORCH_CHECK(int8 == scales.has_value(), "scales go with int8 rows, and only with them");
  TORCH_CHECK(int8 || !int8_activations, "int8 activations go with int8 rows");
  if (int8) {
    check_float_rows(*scales, 2, "scales");
    TORCH_CHECK(scales->is_contiguous() && scales->size(0) == rows.size(0), "scales must be [slots, ...]");
  }
  for (const auto* t : {&token_ids, &starts, &info}) {
    TORCH_CHECK(t->scalar_type() == torch::kInt64 && t->is_contiguous(), "plan tensors must be contiguous int64");
  }
  const int64_t groups = info.size(0), fields = info.size(1), in = x.size(1), T = x.size(0);
  TORCH_CHECK(info.dim() == 2 && fields >= 3 && starts.numel() == groups + 1, "plan shapes mismatch");
  const int64_t* id = token_ids.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  const int64_t* inf = info.data_ptr<int64_t>();
  std::vector<int64_t> group_macs(groups);
  int64_t total_cost = 0;
  for (int64_t g = 0; g < groups; ++g) {  // every index in range before any work
    const int64_t* f = inf + g * fields;
    const int64_t rank = f[1], modules = f[2];
    TORCH_CHECK(f[0] >= 0 && f[0] < rows.size(0) && rank > 0 && modules > 0 && 3 + 2 * modules <= fields,
                "LoRA plan group ", g, " is malformed");
    std::vector<int64_t> widths(modules);
    int64_t macs = in * modules * rank;
    for (int64_t m = 0; m < modules; ++m) {
      widths[m] = f[4 + 2 * m];
      TORCH_CHECK(f[3 + 2 * m] >= 0 && widths[m] >= 0 && f[3 + 2 * m] + widths[m] <= out.size(1),
                  "module window outside out");
      macs += rank * widths[m];
    }
    const int64_t size = int8 ? lora_int8_row_size(in, rank, modules, widths.data()) : macs;
    TORCH_CHECK(size <= rows.size(1) && (!int8 || lora_blocks(modules * rank) * kLoRABlock <= scales->size(1)) &&
                    0 <= st[g] && st[g] <= st[g + 1] && st[g + 1] <= token_ids.numel(),
                "LoRA plan group ", g, " reads past its row, its scales or its tokens");
    for (int64_t t = st[g]; t < st[g + 1]; ++t) TORCH_CHECK(id[t] >= 0 && id[t] < T, "token id out of range");
    group_macs[g] = macs;
    total_cost += (st[g + 1] - st[g]) * macs;
  }
  const int64_t threads = at::get_num_threads(), piece_cost = std::max<int64_t>(1, total_cost / (2 * threads));
  std::vector<Piece> pieces;
  int64_t largest = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t count = st[g + 1] - st[g], cost = count * group_macs[g];
    const int64_t num_pieces = std::clamp<int64_t>((cost + piece_cost - 1) / piece_cost, 1,
                                                   std::max<int64_t>(1, count / kMinPieceTokens));
    for (int64_t p = 0; p < num_pieces; ++p) {
      const int64_t begin = st[g] + count * p / num_pieces, end = st[g] + count * (p + 1) / num_pieces;
      pieces.push_back({g, begin, end, (end - begin) * group_macs[g]});
      largest = std::max(largest, (end - begin) * lora_blocks(inf[g * fields + 1] * inf[g * fields + 2]) * kLoRABlock);
    }
  }
  // isa: torch_checks.h's names ("auto": the widest this CPU runs; "scalar": the portable loops).
  const loomlm::Isa kernel = isa_named(isa);
  // Thread w runs the pieces whose cost midpoint falls in its w-th share of the total.
  std::vector<int64_t> first(threads + 1, int64_t(pieces.size()));
  for (int64_t i = int64_t(pieces.size()) - 1, before = total_cost; i >= 0; --i) {
    before -= pieces[i].cost;
    const int64_t w = total_cost ? std::min(threads - 1, (2 * before + pieces[i].cost) * threads / (2 * total_cost)) : 0;
    for (int64_t k = 0; k <= w; ++k) first[k] = std::min(first[k], i);
  }
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> y(largest);
    std::vector<int64_t> offsets, widths;
    for (int64_t i = first[begin]; i < first[end]; ++i) {
      const Piece& piece = pieces[i];
      const int64_t* f = inf + piece.group * fields;
      offsets.resize(f[2]);
      widths.resize(f[2]);
      for (int64_t m = 0; m < f[2]; ++m) offsets[m] = f[3 + 2 * m], widths[m] = f[4 + 2 * m];
      const LoRASlotTokens s{x.data_ptr<float>(), x.stride(0), id + piece.begin, piece.end - piece.begin, in,
                             f[1], f[2], offsets.data(), widths.data(), out.data_ptr<float>(), out.stride(0)};
      if (!int8) {
        const float* row = rows.data_ptr<float>() + f[0] * rows.size(1);
        if (kernel == loomlm::Isa::kAvx512Vnni) {
          loomlm::avx512::lora_slot_tokens(s, row, y.data());
        } else if (kernel == loomlm::Isa::kAvx2 && s.count > kLoRADirectTokens) {
          loomlm::avx2::lora_slot_tokens(s, row, y.data());
        } else {
          loomlm::lora_slot_tokens(s, row, y.data());
        }
        continue;
      }
      const int8_t* row = rows.data_ptr<int8_t>() + f[0] * rows.size(1);
      const float* slot_scales = scales->data_ptr<float>() + f[0] * scales->size(1);
      // int8 activations where vpdpbusd gains from them; the other kernels keep them float32.
      if (kernel == loomlm::Isa::kAvx512Vnni && int8_activations) {
        loomlm::avx512::lora_slot_tokens_vnni(s, row, slot_scales, y.data());
      } else if (kernel == loomlm::Isa::kAvx512Vnni) {
        loomlm::avx512::lora_slot_tokens_int8(s, row, slot_scales, y.data());
      } else if (kernel == loomlm::Isa::kAvx2) {
        loomlm::avx2::lora_slot_tokens_int8(s, row, slot_scales, y.data());
      } else {
        loomlm::lora_slot_tokens_int8(s, row, slot_scales, y.data());
      }
    }
  });
}

}  // namespace loomlm::ops
