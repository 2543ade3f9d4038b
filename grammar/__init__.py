"""loomlm.grammar: structured-output specs compiled to token automata (see issue 3)."""
