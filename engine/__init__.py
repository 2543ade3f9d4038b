"""loomlm.engine: requests, scheduler, KV blocks, model runner, models, sampler, detokenizer."""
