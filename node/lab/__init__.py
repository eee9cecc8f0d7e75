"""Tools to watch and measure many real nodes on one machine: the swarm lab and ``tidings demo``."""
