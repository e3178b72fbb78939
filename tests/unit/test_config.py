"""NodeConfig: sources merge in order (file < env < flags) and validate() names the bad field."""
from __future__ import annotations

import pathlib

import pytest

from shoal.node.config import NodeConfig, load_config
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
    ({"group_ops_max": 0}, "group_ops_max must be positive"),
    ({"propose_timeout_s": -1.0}, "propose_timeout_s must be positive"),
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
