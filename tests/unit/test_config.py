"""NodeConfig: sources merge in order (file < env < flags) and validate() names the bad field."""
from __future__ import annotations

import dataclasses
import pathlib

import pytest

from shoal.node.config import CPUS, RANGES, NodeConfig, load_config
from shoal.node.errors import ConfigError

BASE = {"node_id": "n1", "data_dir": "/tmp/d"}


def test_config_sources_merge_file_then_env_then_flags(tmp_path: pathlib.Path) -> None:
    """A flag beats the environment, which beats the TOML file; unset flags (None) do not count."""
    toml = tmp_path / "node.toml"
    toml.write_text('[node]\nlisten = "127.0.0.1:1"\nzone = "file"\nlease_s = 1.5\n')
    config = load_config({**BASE, "zone": "flag", "listen": None}, str(toml),
                         environ={"SHOAL_ZONE": "env", "SHOAL_LEASE_S": "1.0", "SHOAL_NODE_DEAD_AFTER_S": "9"})
    assert (config.zone, config.listen, config.lease_s, config.node_dead_after_s) == ("flag", "127.0.0.1:1", 1.0, 9.0)


def test_config_reads_the_raft_password_from_a_file(tmp_path: pathlib.Path) -> None:
    """SHOAL_RAFT_PASSWORD_FILE supplies the mandatory Raft password without putting it in argv."""
    secret = tmp_path / "pw"
    secret.write_text("correct-horse-battery\n")
    config = load_config({**BASE, "raft": "127.0.0.1:7500"}, environ={"SHOAL_RAFT_PASSWORD_FILE": str(secret)})
    assert config.raft_password == "correct-horse-battery"


def test_config_reads_raft_password_file_from_the_toml_file(tmp_path: pathlib.Path) -> None:
    """Issue 14: `raft_password_file` in the config file works as documented (it was "unknown setting");
    the environment's password file still wins over the file's, as later sources do."""
    secret, other = tmp_path / "pw", tmp_path / "pw2"
    secret.write_text("from-the-toml-file\n")
    other.write_text("from-the-environment\n")
    toml = tmp_path / "node.toml"
    toml.write_text(f'[node]\nraft = "127.0.0.1:7500"\nraft_password_file = "{secret}"\n')
    assert load_config(BASE, str(toml), environ={}).raft_password == "from-the-toml-file"
    assert load_config(BASE, str(toml), environ={"SHOAL_RAFT_PASSWORD_FILE": str(other)}).raft_password == \
        "from-the-environment"
    with pytest.raises(ConfigError, match="cannot read raft password file"):
        toml.write_text(f'raft = "127.0.0.1:7500"\nraft_password_file = "{tmp_path / "none"}"\n')
        load_config(BASE, str(toml), environ={})


@pytest.mark.parametrize("overrides, message", [
    ({"raft": "127.0.0.1:7500"}, "password"),
    ({"raft": "127.0.0.1:7500", "raft_password": "longenough", "raft_peers": ("a:1",)}, "1, 3 or 5"),
    ({"raft_peers": ("a:1", "b:2")}, "without raft"),
    ({"raft": "127.0.0.1:7500", "raft_password": "longenough", "join": "h:1"}, "not both"),
    ({"listen": "nohostport"}, "listen: expected HOST:PORT"),
    ({"node_dead_after_s": 3.0}, "node_dead_after_s"),
    ({"leader_fallback_timeout_s": 30.0}, "leader_fallback_timeout_s"),
    ({"key_bytes_max": 600}, "key_bytes_max"),
    ({"map_size_bytes": 1000}, "map_size_bytes"),
    ({"node_id": "has space"}, "node_id"),
    ({"log_format": "xml"}, "log_format"),
    ({"group_ops_max": 0}, r"group_ops_max must be within 1\.\.1_000_000 .*got 0$"),
    ({"propose_timeout_s": -1.0}, r"propose_timeout_s must be within 0\.01\.\.3600 .*got -1\.0$"),
    ({"propose_backoff_s_min": 1.0, "propose_backoff_s_max": 0.5}, "propose_backoff_s_min"),
    ({"scan_chunk_records": 20_000}, "scan_chunk_records"),
    ({"scan_chunk_bytes_max": 16 * 1024 * 1024}, "scan_chunk_bytes_max .* message_bytes_max"),
    ({"fetch_entries_bytes_max": 16 * 1024 * 1024}, "fetch_entries_bytes_max .* message_bytes_max"),
])
def test_config_validate_names_the_bad_setting(overrides: dict[str, object], message: str) -> None:
    """Each invalid combination raises ConfigError mentioning the offending setting."""
    fields = {"node_id": "n1", "data_dir": pathlib.Path("/tmp/d"), **overrides}
    with pytest.raises(ConfigError, match=message):
        NodeConfig(**fields).validate()  # type: ignore[arg-type]


def test_config_rejects_unknown_and_unparsable_settings(tmp_path: pathlib.Path) -> None:
    """A typo in the file or a non-number in the environment is one precise error."""
    toml = tmp_path / "node.toml"
    toml.write_text("lease_seconds = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'lease_seconds'"):
        load_config(BASE, str(toml), environ={})
    with pytest.raises(ConfigError, match="lease_s: cannot read 'soon' as float"):
        load_config(BASE, environ={"SHOAL_LEASE_S": "soon"})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(BASE, str(tmp_path / "missing.toml"), environ={})


def test_every_numeric_setting_has_a_range_and_the_defaults_are_in_it() -> None:
    """A new numeric field cannot skip the bounds: RANGES names exactly the int and float fields."""
    numeric = {f.name for f in dataclasses.fields(NodeConfig) if f.type in ("int", "float")}
    assert set(RANGES) == numeric
    NodeConfig(node_id="n1", data_dir=pathlib.Path("/tmp/d")).validate()


@pytest.mark.parametrize("env, message", [
    ({"SHOAL_MAP_SIZE_BYTES": "99999999999999999999999"}, r"map_size_bytes must be within 1_048_576\.\."
                                                          r"1_099_511_627_776 .*got 99999999999999999999999$"),
    ({"SHOAL_MESSAGE_BYTES_MAX": "99999999999"}, r"message_bytes_max must be within 1\.\.2_147_483_647 .*"
                                                 r"got 99999999999$"),
    ({"SHOAL_MESSAGE_BYTES_MAX": "3000000000"}, r"message_bytes_max .*C ints.*got 3000000000$"),
    ({"SHOAL_WORKERS": "5000"}, rf"workers must be 0 or within 1\.\.{4 * CPUS} .*got 5000$"),
    ({"SHOAL_HEARTBEAT_INTERVAL_S": "1e-9"}, r"heartbeat_interval_s must be within 0\.01\.\.60 .*got 1e-09$"),
    ({"SHOAL_NODE_DEAD_AFTER_S": "inf"}, r"node_dead_after_s must be within 0\.01\.\.86400 .*got inf$"),
    ({"SHOAL_NODE_DEAD_AFTER_S": "nan"}, r"node_dead_after_s .*got nan$"),
    ({"SHOAL_SCRUB_INTERVAL_S": "-inf"}, r"scrub_interval_s must be 0 or within 1\.\.604800 .*got -inf$"),
    ({"SHOAL_LMDB_THREADS": "100000000"}, r"lmdb_threads must be within 1\.\.256 .*got 100000000$"),
    ({"SHOAL_LMDB_MAX_READERS": "99999999999"}, r"lmdb_max_readers must be within 1\.\.65_536 .*got 99999999999$"),
    ({"SHOAL_USER_CODE_CPU_S": "9" * 300}, r"user_code_cpu_s .*got 9{40}\.\.\.$"),
    ({"SHOAL_ADVERTISE": "127.0.0.1:0"}, "advertise: port 0 is not a dialable address"),
])
def test_config_refuses_out_of_range_numbers_in_one_line(env: dict[str, str], message: str) -> None:
    """Values that used to be accepted and then crash (OverflowError from lmdb or gRPC), hang (thousands
    of workers) or spin (a 1 ns heartbeat) are one error naming the setting, its range and the value."""
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(BASE, environ=env)
    assert "\n" not in str(caught.value)


def test_config_accepts_the_test_profile_and_zero_meanings() -> None:
    """The FAST profile of the integration tests and chaos scenarios, and 0 where 0 has a meaning, validate."""
    fast = {"SHOAL_HEARTBEAT_INTERVAL_S": "0.2", "SHOAL_LEASE_S": "1.0", "SHOAL_NODE_SUSPECT_AFTER_S": "1.0",
            "SHOAL_NODE_DEAD_AFTER_S": "3.6", "SHOAL_REPLICATE_TIMEOUT_S": "1.0", "SHOAL_MAP_SIZE_BYTES": "1048576",
            "SHOAL_OVERLOAD_RETRY_AFTER_S": "0.02", "SHOAL_SCRUB_INTERVAL_S": "1", "SHOAL_WORKERS": "0",
            "SHOAL_REPAIR_BYTES_PER_S": "0", "SHOAL_REPAIR_PACING_LATENCY_FACTOR": "0",
            "SHOAL_REPAIR_TRANSFERS_PER_NODE_MAX": "5", "SHOAL_INFLIGHT_REQUESTS_MAX": "8"}
    config = load_config(BASE, environ=fast)
    assert (config.heartbeat_interval_s, config.workers, config.scrub_interval_s) == (0.2, 0, 1.0)


def test_config_refuses_port_0_where_others_dial_it() -> None:
    """Port 0 binds any free port, so nobody can dial it: refused for advertise, raft, raft_peers, join and a
    clustered node's listen; a standalone node's listen and http_listen may use it (its bound port is logged)."""
    voter = {**BASE, "raft_password": "longenough"}
    for flags, name in (({"raft": "127.0.0.1:0"}, "raft"), ({"join": "127.0.0.1:0"}, "join"),
                        ({"join": "h:1", "listen": "127.0.0.1:0"}, "listen"),
                        ({"raft": "h:1", "raft_peers": "h:2,h:0"}, "raft_peers")):
        with pytest.raises(ConfigError, match=f"^{name}: port 0 is not a dialable address"):
            load_config({**voter, **flags}, environ={})
    assert load_config({**BASE, "listen": "127.0.0.1:0", "http_listen": "127.0.0.1:0"}, environ={}).listen
    assert load_config({**voter, "join": "h:1", "listen": "0.0.0.0:0", "advertise": "h:2"}, environ={}).advertise


@pytest.mark.parametrize("peers, message", [
    ("127.0.0.1:7500,127.0.0.1:7501", "'127.0.0.1:7500' is this node's own --raft address"),
    ("127.0.0.1:7501,127.0.0.1:7501", "'127.0.0.1:7501' is listed twice"),
    ("LOCALHOST:7501,localhost:7501", "'localhost:7501' is listed twice"),
])
def test_config_refuses_self_or_repeated_raft_peers(peers: str, message: str) -> None:
    """A peer list naming this voter or one peer twice would count as 3 voters while there are fewer."""
    with pytest.raises(ConfigError, match=f"^raft_peers: {message}"):
        load_config({**BASE, "raft": "127.0.0.1:7500", "raft_peers": peers, "raft_password": "longenough"},
                    environ={})


@pytest.mark.parametrize("text, message", [
    ("workers = true\n", r"^workers: expected an integer, got True \(bool\)$"),
    ("map_size_bytes = 1.5e9\n", r"^map_size_bytes: expected an integer, got 1500000000\.0 \(float\)$"),
    ("lease_s = false\n", r"^lease_s: expected a number, got False \(bool\)$"),
    ("lmdb_sync = 0\n", r"^lmdb_sync: expected true or false, got 0 \(int\)$"),
    ("zone = 5\n", r"^zone: expected a string, got 5 \(int\)$"),
    ("[node]\nraft_peers = [1, 2]\n", r"^raft_peers: expected a list of strings"),
    ("raft_password_file = 5\n", r"^raft_password_file: expected a path, got 5$"),
    ("node = 5\n", r"c8\.toml: node must be a table \(\[node\]\) of settings, got 5$"),
])
def test_config_file_type_mismatches_are_refused(tmp_path: pathlib.Path, text: str, message: str) -> None:
    """TOML values are not coerced: a bool or a float for an integer setting is an error naming the key."""
    toml = tmp_path / "c8.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(BASE, str(toml), environ={})


def test_config_accepts_toml_integers_for_seconds(tmp_path: pathlib.Path) -> None:
    """An integer is a valid number of seconds (chaos scenarios write `node_dead_after_s = 10`)."""
    toml = tmp_path / "node.toml"
    toml.write_text("[node]\nnode_dead_after_s = 10\nlmdb_sync = false\nworkers = 1\n")
    config = load_config(BASE, str(toml), environ={})
    assert (config.node_dead_after_s, config.lmdb_sync, config.workers) == (10, False, 1)


def test_binary_config_and_password_files_are_one_line_errors(tmp_path: pathlib.Path) -> None:
    """A binary --config file or SHOAL_RAFT_PASSWORD_FILE is a ConfigError naming the file, not a traceback."""
    blob = tmp_path / "blob"
    blob.write_bytes(b"\xde\xad\xbe\xef\xff\x00" * 20)
    with pytest.raises(ConfigError, match=f"config file {blob}: not a TOML file"):
        load_config(BASE, str(blob), environ={})
    with pytest.raises(ConfigError, match=f"raft password file {blob} is not UTF-8 text"):
        load_config({**BASE, "raft": "127.0.0.1:7500"}, environ={"SHOAL_RAFT_PASSWORD_FILE": str(blob)})
