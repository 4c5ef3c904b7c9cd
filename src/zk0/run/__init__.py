"""What a run leaves on the server: the run directory, checkpoints, and the state a resumed run starts from."""
