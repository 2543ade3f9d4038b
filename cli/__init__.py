"""The loomlm command line: serve, generate, chat, extract, bench."""
