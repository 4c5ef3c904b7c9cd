"""What travels between the ServerApp and a node: the typed messages, their tensor codecs, the round's encodings."""
