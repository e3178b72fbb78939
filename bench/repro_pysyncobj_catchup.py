"""pysyncobj: an old leader with an uncommitted suffix never catches up after a partition
when the new leader has more than one AppendEntries batch to send (big entries).

Three SyncObj nodes in one process; the partition is emulated by dropping every message
to and from the leader in the transports' send(). Not a benchmark: the reproduction of the
pysyncobj 0.3.17 bug behind the jobs-pause/partition chaos failures (issue 17; notes/
dependencies.md 1.10). Usage: python bench/repro_pysyncobj_catchup.py ENTRY_BYTES
(2000: "caught up"; 20000 or 60000: "STUCK").
"""
import logging, os, socket, sys, time
from pysyncobj import SyncObj, SyncObjConf, replicated

logging.basicConfig(level=logging.CRITICAL)
ENTRY_BYTES = int(sys.argv[1])

class Store(SyncObj):
    def __init__(self, me, peers):
        super().__init__(me, peers, SyncObjConf(appendEntriesUseBatch=False, dynamicMembershipChange=False,
                                                commandsWaitLeader=False, leaderFallbackTimeout=1.0))
        self.applied = 0
    @replicated
    def put(self, blob):
        self.applied += 1

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
nodes = [Store(a, [b for b in addrs if b != a]) for a in addrs]
while not any(n._isLeader() for n in nodes):
    time.sleep(0.05)
old = next(n for n in nodes if n._isLeader())
others = [n for n in nodes if n is not old]
for _ in range(3):
    old.put(os.urandom(ENTRY_BYTES), sync=True, timeout=10)

cut = {"on": False}
def wrap(node, drop_to):
    transport = node._SyncObj__transport
    send = transport.send
    def filtered(peer, message):
        if cut["on"] and (node is old or peer.address == old.selfNode.address):
            return True
        return send(peer, message)
    transport.send = filtered
for n in nodes:
    wrap(n, old)

cut["on"] = True                       # partition the leader
for _ in range(3):                     # it appends these, never commits them
    old.put(os.urandom(ENTRY_BYTES), callback=lambda *a: None)
deadline = time.monotonic() + 10
while not any(n._isLeader() for n in others):
    assert time.monotonic() < deadline, "no new leader"
    time.sleep(0.05)
new = next(n for n in others if n._isLeader())
for _ in range(10):                    # the majority goes on
    new.put(os.urandom(ENTRY_BYTES), sync=True, timeout=10)
cut["on"] = False                      # heal
target = new.getStatus()["commit_idx"]
deadline = time.monotonic() + 15
while time.monotonic() < deadline and old.getStatus()["commit_idx"] < target:
    time.sleep(0.1)
for n in nodes:
    st = n.getStatus()
    print(n.selfNode.address, st["state"], "term", st["raft_term"], "log_len", st["log_len"], "commit", st["commit_idx"],
          "applied", n.applied)
print("old leader caught up" if old.getStatus()["commit_idx"] >= target else "old leader STUCK 15 s after the heal")
for n in nodes:
    n.destroy()
