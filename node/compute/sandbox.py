"""The user-code sandbox (issue 19.3): a map-reduce worker reaches no network and no node secret.

Entered once, in the worker process before it runs anything else (single-threaded, which a
new user namespace needs):
- a new network namespace: only a loopback that is down, so every connect fails
  (ENETUNREACH), to the node, its peers or anywhere (`unshare(CLONE_NEWNET)`);
- a private mount namespace in which the node's secrets are hidden: an empty read-only tmpfs
  over each secret directory (the Raft dir: the metadata journal and dump), /dev/null bound
  over each secret file (the Raft password file); the shard files the task scans stay;
- no `SHOAL_*` environment variables (names of secret files among them).
As root the namespaces need nothing else; otherwise a user namespace maps this uid and gid
to themselves first (the unprivileged recipe of notes/fault-injection.md 3.13). CPU, memory
and wall-time limits are set by map_reduce.py. Why ctypes and not a library: two syscalls.
Where namespaces are not allowed (a container without CAP_SYS_ADMIN that also forbids user
namespaces), entering fails and the task fails naming the cause; `user_code_sandbox = false`
runs user code without it (then it can reach what the node reaches).
"""
from __future__ import annotations

import ctypes
import os
import pathlib
from collections.abc import Sequence

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


class SandboxError(OSError):
    """The sandbox could not be entered; the message names the step and the OS error."""


def enter(hidden: Sequence[str]) -> None:
    """Move this process into the sandbox; `hidden`: secret files and directories to hide."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNET | CLONE_NEWNS | (0 if os.geteuid() == 0 else CLONE_NEWUSER)
    _check(libc.unshare(flags), "unshare the network and mount namespaces")
    if flags & CLONE_NEWUSER:
        pathlib.Path("/proc/self/setgroups").write_text("deny")
        pathlib.Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        pathlib.Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make the mounts private")
    for path in hidden:
        target = pathlib.Path(path)
        if target.is_dir():
            _check(libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", MS_RDONLY, b"size=4k,mode=000"),
                   f"hide {target}")
        elif target.exists():
            _check(libc.mount(b"/dev/null", os.fsencode(target), None, MS_BIND, None), f"hide {target}")
    for name in [name for name in os.environ if name.startswith("SHOAL_")]:
        del os.environ[name]


def secrets_of(data_dir: pathlib.Path, encryption_key_file: str = "") -> list[str]:
    """The node's secret paths: its Raft dir, the Raft password file named in its environment and
    its encryption key file (a task of an encrypted dataset gets that dataset's derived key only)."""
    found = [str(data_dir / "raft"), *([encryption_key_file] if encryption_key_file else [])]
    password_file = os.environ.get("SHOAL_RAFT_PASSWORD_FILE")
    if password_file:
        found.append(password_file)
    return found


def _check(result: int, step: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise SandboxError(code, f"user-code sandbox: cannot {step}: {os.strerror(code)} "
                                 "(set user_code_sandbox = false to run user code without it)")
