"""Small helpers every layer may use: crash-safe writes, cache paths, console lines, one-line failures."""
