"""The Shoal node daemon (`shoal node start`): shards in LMDB, metadata in Raft, gRPC API."""
