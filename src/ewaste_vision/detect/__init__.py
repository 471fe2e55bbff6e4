"""Object detection of board components, how to score it, and how to run it on large photos."""
