"""Training: the loop, checkpoints and run logging."""
