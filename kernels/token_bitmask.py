"""Grammar bitmask apply: set logits to -inf where a request's grammar forbids the token.

The bitmask is int32 ``[rows, ceil(vocab / 32)]``: token ``t`` is allowed when bit ``t % 32`` of
word ``t // 32`` is set. ``rows`` lists the logits rows that are constrained; the others are left
alone, so constrained and free requests share one batch. Owns `apply_token_bitmask_ref` (pure
torch, the CPU path), `apply_token_bitmask_triton` and the `apply_token_bitmask` dispatcher."""

from __future__ import annotations

import torch

from loomlm.kernels.triton_import import require_triton, tl, triton


def _check(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor) -> None:
    if logits.dim() != 2 or bitmask.dim() != 2:
        raise ValueError(
            f"logits and bitmask must be 2-D, got {tuple(logits.shape)} / {tuple(bitmask.shape)}"
        )
    if bitmask.dtype != torch.int32:
        raise ValueError(f"bitmask must be int32, got {bitmask.dtype}")
    if bitmask.shape[1] * 32 < logits.shape[1]:
        raise ValueError(f"bitmask width {bitmask.shape[1]} words cannot cover {logits.shape[1]} tokens")
    if rows.dim() != 1:
        raise ValueError(f"rows must be 1-D, got {tuple(rows.shape)}")


def apply_token_bitmask_ref(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor) -> None:
    """In place: ``logits[r, t] = -inf`` for each r in ``rows`` where bit t of ``bitmask[r]`` is 0."""
    _check(logits, bitmask, rows)
    if rows.numel() == 0:
        return
    vocab = logits.shape[1]
    num_words = -(-vocab // 32)
    rows = rows.to(torch.int64)
    # A byte -> 8 "forbidden" flags table turns unpacking into one gather (several times faster on
    # CPU than shifting every word 32 ways); little-endian bytes keep token order.
    byte_bits = (
        torch.arange(256, device=bitmask.device).unsqueeze(1) >> torch.arange(8, device=bitmask.device)
    ) & 1
    forbidden_lut = byte_bits == 0
    words = bitmask[rows, :num_words].contiguous()
    forbidden = forbidden_lut[words.view(torch.uint8).int()].view(rows.numel(), num_words * 32)[:, :vocab]
    if rows.numel() == logits.shape[0] and torch.equal(rows, torch.arange(rows.numel(), device=rows.device)):
        logits.masked_fill_(forbidden, float("-inf"))  # every row: no gather/scatter of the logits
    else:
        logits[rows] = logits[rows].masked_fill(forbidden, float("-inf"))


if triton is not None:

    @triton.jit
    def _apply_token_bitmask_kernel(
        logits_ptr,
        bitmask_ptr,
        rows_ptr,
        vocab_size,
        stride_logits,
        stride_bitmask,
        BLOCK_WORDS: tl.constexpr,
    ):
        # Program (i, j): constrained row rows[i], words [j*BLOCK_WORDS, (j+1)*BLOCK_WORDS).
        row = tl.load(rows_ptr + tl.program_id(0)).to(tl.int64)
        words = tl.program_id(1) * BLOCK_WORDS + tl.arange(0, BLOCK_WORDS)
        num_words = tl.cdiv(vocab_size, 32)
        packed = tl.load(bitmask_ptr + row * stride_bitmask + words, mask=words < num_words, other=-1)
        bits = tl.arange(0, 32)
        allowed = ((packed[:, None] >> bits[None, :]) & 1) != 0
        tokens = words[:, None] * 32 + bits[None, :]
        ptrs = logits_ptr + row * stride_logits + tokens
        store_mask = (tokens < vocab_size) & (allowed == 0)
        neg_inf = tl.full([BLOCK_WORDS, 32], float("-inf"), tl.float32)
        tl.store(ptrs, neg_inf.to(logits_ptr.dtype.element_ty), mask=store_mask)


def apply_token_bitmask_triton(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor) -> None:
    """Triton version of `apply_token_bitmask_ref` (same contract); writes only forbidden entries."""
    require_triton()
    _check(logits, bitmask, rows)
    if rows.numel() == 0:
        return
    if logits.stride(1) != 1 or bitmask.stride(1) != 1:
        raise ValueError("logits and bitmask must have unit stride along the vocabulary")
    vocab = logits.shape[1]
    block_words = 32
    grid = (rows.numel(), triton.cdiv(triton.cdiv(vocab, 32), block_words))
    _apply_token_bitmask_kernel[grid](
        logits,
        bitmask,
        rows.contiguous(),
        vocab,
        logits.stride(0),
        bitmask.stride(0),
        BLOCK_WORDS=block_words,
    )


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor) -> None:
    """Mask forbidden tokens in place: the Triton kernel on CUDA (when triton imports), else the reference."""
    if logits.is_cuda and triton is not None:
        apply_token_bitmask_triton(logits, bitmask, rows)
    else:
        apply_token_bitmask_ref(logits, bitmask, rows)
