"""Finding other nodes: the DHT's trio UDP adapter over the sans-IO Kademlia core, and discovery
(bootstrap, node records, swarm membership) on top of it."""
