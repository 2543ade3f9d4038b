"""What the AsyncLLM tests share besides fixtures: engine options and ``run``."""

from __future__ import annotations

import asyncio

ASYNC_OPTIONS = dict(max_model_len=256, block_size=8, max_num_batched_tokens=64)


def run(coro, timeout: float = 30.0):
    """Run a test body on a fresh event loop; a hang fails the test instead of blocking it."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
