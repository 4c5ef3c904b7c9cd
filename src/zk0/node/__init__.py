"""The node's side of a round: what a ClientApp process keeps warm, and what a node remembers between rounds."""
