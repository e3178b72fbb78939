"""Issue 17: compute jobs on a real 3-node cluster (processes, Raft, LMDB, worker pools).

The answers are checked against the same computation done here in Python over the
records the test wrote; failover tests kill the node running a task (and the controller)
mid-job and still expect the exact answer, every shard counted once.
"""
from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from shoal.client import (
    Client, InvalidArgumentError, JobFailedError, LimitExceededError, QueryError, ResourceExhaustedError,
    UnavailableError, UserCodeDisabledError,
)
from shoal.client.local import LocalCluster
from shoal.client.wire.routing import encode_key, shard_for_key
from test_cluster_replication import FAST, wait_for

COUNTRIES = ["DE", "FR", "US", "JP", "BR"]
USER_CODE = {**FAST, "SHOAL_USER_CODE": "1", "SHOAL_WORKERS": "2", "SHOAL_SPECULATIVE_AFTER_S_MIN": "30",
             "SHOAL_TASK_RESULT_BYTES_MAX": "65536", "SHOAL_USER_CODE_WALL_S": "6"}


def event(i: int) -> dict[str, Any]:
    return {"id": i, "country": COUNTRIES[i % 5], "amount": (i * 7919) % 1000,
            "score": None if i % 7 == 0 else i / 8, "user": {"tier": "gold" if i % 3 == 0 else "basic"}}


def reference(count: int) -> list[dict[str, Any]]:
    groups: dict[str, list[Any]] = collections.defaultdict(lambda: [0, 0, 0, []])
    for i in range(count):
        e = event(i)
        if e["amount"] <= 100:
            continue
        g = groups[e["country"]]
        g[0] += 1
        g[1] += e["amount"]
        g[2] += e["user"]["tier"] == "gold"
        if e["score"] is not None:
            g[3].append(e["score"])
    return [{"country": c, "n": g[0], "total": g[1], "gold": g[2], "mean_score": sum(g[3]) / len(g[3])}
            for c, g in sorted(groups.items())]


@pytest.fixture
def cluster(local_cluster: Any) -> LocalCluster:
    made: LocalCluster = local_cluster(3, env=USER_CODE)
    return made


def test_query_group_by_is_exact_and_reattaches(cluster: LocalCluster) -> None:
    """where + group_by + count/sum/mean over 6 shards equals the Python reference; a second
    process reattaches by job id and reads the same rows; progress counts every record once."""
    count = 6000
    with cluster.client() as client:
        client.create_dataset("events", shards=6, replication=3)
        client.put_many("events", ((f"e{i:06d}", event(i)) for i in range(count)))
        job = (client.query("events").where("amount > 100").with_column("gold", "user.tier == 'gold'")
               .group_by("country").agg(n=("count", None), total=("sum", "amount"), gold=("count", "gold"),
                                        mean_score=("mean", "score")).submit())
        rows = job.result(timeout=60)
        expected = reference(count)
        assert [r["country"] for r in rows] == [r["country"] for r in expected]
        for got, want in zip(rows, expected):
            assert (got["n"], got["total"]) == (want["n"], want["total"])
            assert got["mean_score"] == pytest.approx(want["mean_score"], rel=1e-12)
        assert job._last is not None and job._last.rows_included      # small: in the long poll's answer
        progress = job.progress()
        assert progress.state == "done" and progress.tasks_done == progress.tasks_total == 6
        assert progress.records_scanned == count
        script = ("import json, sys; from shoal.client import Client\n"
                  f"c = Client({cluster.addresses!r}); print(json.dumps(c.job(sys.argv[1]).result()))")
        out = subprocess.run([sys.executable, "-c", script, job.id], capture_output=True, text=True, timeout=60,
                             env={**os.environ})
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == json.loads(json.dumps(rows))
        top = client.query("events").order_by("amount", descending=True).order_by("id").limit(3) \
            .select("id", "amount").collect(timeout=60)
        want_top = sorted((event(i) for i in range(count)), key=lambda e: (-e["amount"], e["id"]))[:3]
        assert top == [{"id": e["id"], "amount": e["amount"]} for e in want_top]
        every = client.query("events").select("id", "amount").order_by("id").submit()
        assert every.result(timeout=60) == [{"id": i, "amount": event(i)["amount"]} for i in range(count)]
        assert every._last is not None and not every._last.rows_included   # ~100 KB: streamed in chunks
        assert client.query("events").where("country in ('DE', 'FR') and score is null").count() == \
            sum(1 for i in range(count) if event(i)["country"] in ("DE", "FR") and event(i)["score"] is None)


def test_bad_queries_fail_before_any_task(cluster: LocalCluster) -> None:
    """A bad expression is QueryError naming the clause and column; nothing is recorded; an
    unknown dataset is named."""
    with cluster.client() as client:
        client.create_dataset("small", shards=2, replication=3)
        with pytest.raises(QueryError, match=r"where.*column"):
            client.query("small").where("amount > > 3").collect()
        with pytest.raises(QueryError):
            client.query("small").agg(x=("median", "amount"))   # type: ignore[arg-type]
        with pytest.raises(QueryError, match="group_by"):
            client.query("small").group_by("amount +").agg(n=("count", None)).collect()
        assert client.jobs() == []
        with pytest.raises(Exception, match="nope"):
            client.query("nope").count()


def test_typed_dataset_validates_writes_and_reads_documents(cluster: LocalCluster) -> None:
    """A schema checks every write (one error naming the field), stores positional arrays, and
    reads and queries see documents."""
    schema = {"carrier": "str", "delay": "float?", "flights": "int"}
    with cluster.client() as client:
        client.create_dataset("typed", shards=3, replication=3, schema=schema)
        client.put_many("typed", ((f"k{i}", {"carrier": "AB"[i % 2], "delay": None if i % 5 == 0 else i * 1.5,
                                            "flights": i}) for i in range(300)))
        assert client.get("typed", "k3") == {"carrier": "B", "delay": 4.5, "flights": 3}
        with pytest.raises(InvalidArgumentError, match="delay"):
            client.put("typed", "bad", {"carrier": "A", "delay": "late", "flights": 1})
        with pytest.raises(InvalidArgumentError, match="flights"):
            client.put_many("typed", [("bad2", {"carrier": "A", "delay": 1.0})])
        assert client.get("typed", "bad") is None and client.get("typed", "bad2") is None
        rows = client.query("typed").group_by("carrier").agg(n=("count", None), d=("sum", "delay"),
                                                              nd=("count", "delay")).collect(timeout=60)
        for row in rows:
            mine = [i for i in range(300) if "AB"[i % 2] == row["carrier"]]
            assert row["n"] == len(mine) and row["nd"] == sum(1 for i in mine if i % 5)
            assert row["d"] == sum(i * 1.5 for i in mine if i % 5)
        with pytest.raises(InvalidArgumentError, match="badtype"):
            client.create_dataset("typed2", shards=1, schema={"x": "badtype"})
        with pytest.raises(InvalidArgumentError, match="field '_key': the name is reserved"):
            client.create_dataset("typed2", shards=1, schema={"_key": "str"})   # queries read _key as the key


def slow_mapper(key: str, value: Any) -> list[tuple[str, int]]:
    import time as _time
    if value["id"] == 0:
        _time.sleep(2.0)   # the task of this shard is still running when the test kills its node
    return [(value["country"], value["amount"])]


def run_slow_map_reduce(cluster: LocalCluster, victim_of: Any, *, rerun: bool) -> None:
    """Start a map-reduce whose task of the shard holding e00000 sleeps 4 s, kill -9 the node
    victim_of(client, job) names while it runs, and check the output is exact: one record per
    key with the exact sum, and the lost attempt ran again."""
    count = 500
    with cluster.client() as client:
        client.create_dataset("mr_in", shards=3, replication=3)
        client.create_dataset("mr_out", shards=2, replication=3)
        client.put_many("mr_in", ((f"e{i:05d}", event(i)) for i in range(count)))
        job = client.map_reduce("mr_in", slow_mapper, lambda key, values: sum(values), output="mr_out")
        victim = victim_of(client, job.id)
        cluster.kill(victim)
        rows = job.result(timeout=120)
        assert rows == [{"output": "mr_out", "records": 5}]
        want: collections.Counter[str] = collections.Counter()
        for i in range(count):
            want[event(i)["country"]] += event(i)["amount"]
        got = {k.decode() if isinstance(k, bytes) else k: v for k, v in client.scan("mr_out")}
        assert got == dict(want)
        if rerun:
            assert job.progress().attempts > 4, job.progress()   # 3 maps + 1 reduce + the re-run


def test_map_reduce_survives_the_death_of_the_task_node(cluster: LocalCluster) -> None:
    """kill -9 of the node running the slow map task mid-job."""
    from shoal.client.wire.routing import encode_key, shard_for_key
    shard = shard_for_key(encode_key("e00000"), 3)

    def task_node(client: Client, job_id: str) -> str:
        node = _attempt_node(client, job_id, shard)
        assert node is not None
        return node
    run_slow_map_reduce(cluster, task_node, rerun=True)


def test_map_reduce_survives_the_death_of_the_controller(cluster: LocalCluster) -> None:
    """kill -9 of the controller (the Raft leader) mid-job: the new leader resumes the job from
    the Raft job table."""
    run_slow_map_reduce(cluster, lambda client, job_id: _controller(client), rerun=False)


def _attempt_node(client: Client, job_id: str, shard: int) -> str | None:
    """The node of the latest attempt of task `shard` while it is not done."""
    task = client.job(job_id).progress().tasks[shard]
    return task.nodes[-1] if task.nodes and not task.done else None


def _controller(client: Client) -> str:
    return str(client.status()["controller"])


def failing_mapper(key: str, value: Any) -> list[tuple[str, int]]:
    if value["id"] == 7:
        raise ValueError(f"cannot map record {key}")
    return [(key, 1)]


def endless_mapper(key: str, value: Any) -> list[tuple[str, int]]:
    while True:
        pass


def test_limits_and_failures_are_one_clear_error(cluster: LocalCluster) -> None:
    """A mapper that raises fails the job naming the task, node and exception; a mapper past
    user_code_wall_s is killed; a result over task_result_bytes_max is LIMIT_EXCEEDED naming the
    limit; a running job can be cancelled; the cluster keeps serving afterwards."""
    with cluster.client() as client:
        client.create_dataset("lim", shards=2, replication=3)
        client.create_dataset("lim_out", shards=1, replication=3)
        client.put_many("lim", ((f"e{i:05d}", event(i)) for i in range(3000)))
        with pytest.raises(JobFailedError, match=r"task \d+ of job .* on node n\d: mapper raised ValueError: cannot "
                                                 r"map record e00007"):
            client.map_reduce("lim", failing_mapper, lambda k, vs: sum(vs), output="lim_out").result(timeout=60)
        with pytest.raises(JobFailedError, match="user_code_wall_s = 6"):
            client.map_reduce("lim", endless_mapper, lambda k, vs: sum(vs), output="lim_out").result(timeout=60)
        with pytest.raises(JobFailedError, match="task_result_bytes_max = 65536") as info:
            client.query("lim").collect(timeout=60)
        assert info.value.code == "LIMIT_EXCEEDED"
        over = client.query("lim").submit()                      # partials ride in the log: capped per task
        progress = over.wait(timeout=60)
        assert progress.state == "failed" and progress.error_code == "LIMIT_EXCEEDED"
        assert re.search(rf"task \d of job {over.id} \(dataset lim\) on node n\d: the partial result of this shard "
                         r"is \d+ bytes, over task_result_bytes_max = 65536", progress.error), progress.error
        with pytest.raises(LimitExceededError, match="task_result_bytes_max = 65536") as exhausted:
            client._job_call("fetch job result", lambda stub, timeout_s: over._fetch(stub, timeout_s))
        assert isinstance(exhausted.value, ResourceExhaustedError)   # RESOURCE_EXHAUSTED on the wire
        job = client.map_reduce("lim", endless_mapper, lambda k, vs: sum(vs), output="lim_out")
        assert job.cancel().state == "cancelled"
        with pytest.raises(JobFailedError, match="cancelled"):
            job.result(timeout=10)
        assert client.query("lim").count() == 3000
        client.create_dataset("huge", shards=2, replication=1)
        client.put_many("huge", ((f"h{i}", {"i": 2 ** 63 - 1}) for i in range(3)))
        with pytest.raises(JobFailedError, match=r"aggregate s = sum\(i\): the result 27670116110564327421 is "
                                                 r"outside -2\^63\.\.2\^64-1"):
            client.query("huge").agg(s=("sum", "i")).collect(timeout=60)
        with pytest.raises(JobFailedError, match=r"task \d+ of job .* on node n\d: x: \d+ is an integer outside"):
            client.query("huge").with_column("x", "i * 3").select("x").collect(timeout=60)
        assert client.query("huge").agg(s=("sum", "i * 1.0")).collect(timeout=60) == [{"s": 3.0 * (2 ** 63 - 1)}]


def test_a_node_cut_off_from_the_leader_does_not_report_a_running_job_forever(cluster: LocalCluster) -> None:
    """With the other two nodes paused, a node's long poll on a running job ends in
    NoControllerError (it cannot confirm the job's state) instead of "running" from its
    stale copy, and so does a job it has not seen (it cannot read through the log); a client
    then asks another node. The cluster serves again after the resume."""
    from shoal.client._channel import rpc_errors
    from shoal.client._errors import NoControllerError
    from shoal.client.wire.pb import jobs_pb2
    with cluster.client() as client:
        client.create_dataset("cut", shards=1, replication=3)
        client.create_dataset("cut_out", shards=1, replication=3)
        client.put_many("cut", ((f"e{i:05d}", event(i)) for i in range(10)))
        job = client.map_reduce("cut", endless_mapper, lambda k, vs: sum(vs), output="cut_out")
        lone, *others = cluster.nodes
        stub = client._transport.jobs_stub(lone.address)
        assert stub.GetJob(jobs_pb2.JobRequest(job_id=job.id), timeout=30).state == "running"   # lone knows it
        for node in others:
            cluster.pause(node.id)
        try:
            with pytest.raises(NoControllerError, match=f"confirm the state of job {job.id}"), \
                    rpc_errors("job status", node=lone.address):
                stub.GetJob(jobs_pb2.JobRequest(job_id=job.id, wait_s=0.2), timeout=60)
            with pytest.raises(NoControllerError, match="confirm job 'j-not-here'"), \
                    rpc_errors("job status", node=lone.address):   # unknown here: maybe not applied yet
                stub.GetJob(jobs_pb2.JobRequest(job_id="j-not-here"), timeout=60)
        finally:
            for node in others:
                cluster.resume(node.id)
        assert job.cancel().state == "cancelled"
        assert client.query("cut").count() == 10


def test_user_code_refused_when_not_enabled(local_cluster: Any) -> None:
    """map_reduce on a cluster started without --user-code: UserCodeDisabledError, nothing recorded."""
    single: LocalCluster = local_cluster(1, env=FAST)
    with single.client() as client:
        client.create_dataset("a", shards=1)
        client.create_dataset("b", shards=1)
        with pytest.raises(UserCodeDisabledError, match="user-code"):
            client.map_reduce("a", lambda k, v: [(k, 1)], lambda k, vs: sum(vs), output="b")
        assert client.jobs() == []


def test_job_fails_naming_the_shard_without_replicas(local_cluster: Any) -> None:
    """R=1: the node holding a shard dies; a job over it fails naming the shard, not hanging."""
    made: LocalCluster = local_cluster(3, env=FAST)
    with made.client() as client:
        client.create_dataset("single", shards=3, replication=1)
        client.put_many("single", ((f"k{i}", i) for i in range(30)))
        shard_map = {d.name: d for d in client.cluster_map().datasets}["single"].shard_map
        holder = next(s.primary for s in shard_map if s.primary != _controller(client))
        made.kill(holder)
        wait_for(lambda: any(n["id"] == holder and n["state"] == "dead" for n in client.status()["nodes"]),
                 made, f"{holder} declared dead")
        with pytest.raises(JobFailedError, match=r"shard \d+ of dataset single has no in-sync replica"):
            client.query("single").count()
    lost = next(s.index for s in shard_map if s.primary == holder)
    key = next(f"k{i}" for i in range(30) if shard_for_key(encode_key(f"k{i}"), 3) == lost)
    with made.client(timeout_s=3) as client:   # a read of that shard says why, not "Connection refused"
        with pytest.raises(UnavailableError, match=rf"get failed: shard single/{lost} has no in-sync replica on an "
                                                   rf"alive node \(replicas: {holder} dead\)"):
            client.get("single", key)
        with pytest.raises(UnavailableError, match=rf"scan failed: shard single/{lost} has no in-sync replica"):
            list(client.scan("single"))


def sandbox_probe(node_address: str, password_file: str) -> Any:
    """A mapper that reports what user code can reach: the node's gRPC port, the Raft password
    file, the Raft dir of the node running it (its working directory) and SHOAL_* variables."""
    def mapper(key: str, value: Any) -> list[tuple[str, str]]:
        import os
        import socket
        host, port = node_address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            net = "connected"
        except OSError as exc:
            net = f"refused: {exc.strerror or exc}"
        try:
            with open(password_file) as fh:
                password = fh.read()
        except OSError as exc:
            password = f"error: {exc.strerror}"
        try:
            raft = ",".join(sorted(os.listdir(os.path.join(os.getcwd(), "raft"))))
        except OSError as exc:
            raft = f"error: {exc.strerror}"
        env = ",".join(sorted(name for name in os.environ if name.startswith("SHOAL_")))
        return [("net", net), ("password", password), ("raft", raft), ("env", env)]
    return mapper


def test_user_code_reaches_no_network_and_no_node_secret(cluster: LocalCluster) -> None:
    """Issue 19.3: a map-reduce mapper cannot connect to the node (a new network namespace),
    reads nothing from the Raft password file or its node's Raft dir (hidden in a private mount
    namespace) and sees no SHOAL_* variable; the job itself still runs."""
    password = cluster.password_file.read_text()
    with cluster.client(timeout_s=20) as client:
        client.create_dataset("sb_in", shards=1, replication=1)
        client.create_dataset("sb_out", shards=1, replication=1)
        client.put("sb_in", "k", 1)
        mapper = sandbox_probe(cluster.addresses[0], str(cluster.password_file))
        client.map_reduce("sb_in", mapper, lambda key, values: values[0], output="sb_out").result(timeout=120)
        seen = {key: client.get("sb_out", key) for key in ("net", "password", "raft", "env")}
    assert seen["net"].startswith("refused"), seen
    assert password.strip() and password.strip() not in seen["password"], seen
    assert "journal" not in seen["raft"] and "dump" not in seen["raft"], seen
    assert seen["env"] == "", seen
