"""The wire room: everything the client and the node must agree on, and nothing else.

- `pb`        generated protobuf/gRPC stubs of package shoal.v1 (proto/generate.py writes them)
- `routing`   key -> shard hash (xxh64), shared so both sides always agree where a key lives
- `codes`     error code names and the trailing-metadata keys that carry them
- `channels`  `Wire`: the one factory of gRPC channels (sync and asyncio) and server ports,
              with the channel and server options; TLS credentials and auth metadata plug in here
- `retry`     `RetryPolicy`: the one backoff schedule every retry loop uses
- `status`    the cluster status dict (`shoal status --json`, the dashboard API) from the map
              and each node's NodeStatus: pure, so both sides compute it the same way

This package imports nothing of shoal.node or shoal.chaos, and nothing private of the
client (DESIGN.md section 1: `chaos -> client -> wire`, `node -> wire`).
"""
