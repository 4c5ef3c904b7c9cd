"""A node's LeRobot dataset: its URI, how it is opened and split, its cameras and normalization statistics."""
