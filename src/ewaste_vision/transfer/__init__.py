"""Transfer studies: a network from scratch, from your own earlier run, and from ImageNet (003)."""
