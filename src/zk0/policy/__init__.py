"""The policy: SmolVLA built or loaded, its trainable part, local training and the held-out metric."""
