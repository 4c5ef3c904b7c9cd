"""The ServerApp's round: sampling, screening and aggregating replies, the global model and the round's records."""
