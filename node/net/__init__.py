"""The network stack: the running node, its connections, the connection manager, the Noise
transport, and the scores and budgets that bound what each peer may cost."""
