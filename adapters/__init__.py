"""loomlm.adapters: PEFT LoRA adapters, registry and batched LoRA layers (see issue 4)."""
