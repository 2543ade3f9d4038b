"""Grammar backends: what turns a GrammarSpec into a per-request matcher. ``base`` holds the seam
(the backend and matcher interfaces, and the ``auto`` rule); ``outlines`` (our JSON Schema -> regex
translator and outlines-core's token index) and ``llguidance`` (lazy Earley parsing over a lexer)
implement it."""
