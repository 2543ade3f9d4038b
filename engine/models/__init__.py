"""Llama-family model implementations running over the paged KV cache."""
