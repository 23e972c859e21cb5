"""redis-py's cluster client (`RedisCluster`) pointed at poolside, which
presents itself as a one-node cluster owning every slot (tests/cluster.rs
runs it, in front of a Redis Cluster and of a standalone Redis).

    .venv/bin/python cluster_scenario.py HOST PORT

Prints `ok <step>` per step and `all steps passed`; the first failure
prints `FAIL <step>: <message>` on stderr and exits 1.
"""

import secrets
import sys

from redis.cluster import RedisCluster

step = "connect"
try:
    host, port = sys.argv[1], int(sys.argv[2])
    prefix = "rc:" + secrets.token_hex(4)
    client = RedisCluster(host=host, port=port, socket_timeout=10)
    nodes = client.get_nodes()
    assert len(nodes) == 1 and nodes[0].port == port, f"nodes: {nodes}"
    print(f"ok {step}: one node at port {nodes[0].port}")

    step = "set/get"
    for i in range(200):
        client.set(f"{prefix}:{i}", str(i))
    got = [client.get(f"{prefix}:{i}") for i in range(200)]
    assert got == [str(i).encode() for i in range(200)], got[:5]
    print(f"ok {step}: 200 keys")

    step = "mget/mset across slots"
    client.mset_nonatomic({f"{prefix}:m{i}": str(i) for i in range(50)})
    got = client.mget_nonatomic([f"{prefix}:m{i}" for i in range(50)])
    assert got == [str(i).encode() for i in range(50)], got[:5]
    print(f"ok {step}")

    step = "pipeline"
    pipe = client.pipeline()
    for i in range(100):
        pipe.incr(f"{prefix}:counter:{i % 10}")
    results = pipe.execute()
    assert results[-1] == 10, results[-10:]
    print(f"ok {step}: 100 commands")

    step = "delete"
    deleted = client.delete(*[f"{prefix}:{i}" for i in range(200)])
    assert deleted == 200, deleted
    print(f"ok {step}")
    print("all steps passed")
except Exception as e:  # noqa: BLE001 - report any failure as the step's
    print(f"FAIL {step}: {e!r}", file=sys.stderr)
    sys.exit(1)
