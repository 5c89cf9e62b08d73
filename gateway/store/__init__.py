"""Where the registry comes from and is kept: policy files, the stores (memory, Redis)
behind one protocol, and each replica's cached snapshot."""
