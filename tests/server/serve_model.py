"""The SIGTERM tests' server process: ``python serve_model.py MODEL_DIR PORT SHUTDOWN_TIMEOUT
[DATA_PARALLEL_SIZE]`` runs ``run_server`` (signals, drain and all) and exits with its return code."""

from __future__ import annotations

import logging
import sys

from loomlm.server import ServerConfig, run_server

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    model_dir, port, shutdown_timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    data_parallel_size = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    config = ServerConfig(
        model=model_dir,
        served_model_name="tiny",
        port=port,
        api_key="sigterm-key",
        shutdown_timeout=shutdown_timeout,
        data_parallel_size=data_parallel_size,
        # Two sequences at a time: the long requests queue up, so the drain has work to cut short.
        engine_options={"max_model_len": 512, "block_size": 8, "max_num_seqs": 2},
    )
    sys.exit(run_server(config))
