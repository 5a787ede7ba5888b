"""``albireo users`` with records only (no broker): secrets shown once, kept hashed, rules derived from grants.

The broker side (SCRAM, PLAIN, ACLs on a real Kafka) is in tests/integration/test_stream_access_kafka.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from broker.access import plainfile
from broker.access.secrets import (
    check_plain_verifier,
    hash_api_secret,
    new_api_key,
    plain_verifier,
    split_api_key,
    verify_api_secret,
)
from broker.ports import AccessRule

ROOT = Path(__file__).resolve().parents[2]


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ALBIREO_USERS__DB=str(tmp_path / "users.sqlite"), ALBIREO_USERS__STREAM_ACCESS="none",
               ALBIREO_HOME=str(tmp_path / "home"))
    return subprocess.run([sys.executable, "-m", "broker.cli", "users", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_api_key_hash_round_trip_and_refusals():
    key_id, key = new_api_key()
    parts = split_api_key(key)
    assert parts is not None and parts[0] == key_id
    stored = hash_api_secret(parts[1])
    assert stored.startswith("scrypt$") and parts[1] not in stored
    assert verify_api_secret(parts[1], stored)
    assert not verify_api_secret(parts[1][:-1] + ("A" if parts[1][-1] != "A" else "B"), stored)
    assert not verify_api_secret(parts[1], "scrypt$garbage")
    assert hash_api_secret(parts[1]) != stored  # salted
    for bad in ("", "alb_", f"alb_{key_id}_short", "x" * 10_000, key + "\n" + key, f"ALB_{key_id}_{'a' * 43}"):
        assert split_api_key(bad) is None, bad


def test_plain_verifier_matches_only_its_password():
    fields = plain_verifier("correct horse", iterations=1000)
    assert fields.startswith("pbkdf2-sha512:1000:")
    assert check_plain_verifier("correct horse", fields)
    assert not check_plain_verifier("correct horsf", fields) and not check_plain_verifier("", fields)


def _add_lines(path: str, prefix: str, n: int) -> None:
    for i in range(n):
        plainfile.set_user(path, f"{prefix}{i}", plain_verifier("pw", iterations=1000))


def test_concurrent_writers_of_the_plain_file_keep_every_line(tmp_path):
    """Several `albireo users` (or test runs) sharing one broker never drop each other's users."""
    path = str(tmp_path / "plain-credentials")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_lines, args=(path, f"w{k}-", 15)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    names = [line.split(":", 1)[0] for line in Path(path).read_text().splitlines() if not line.startswith("#")]
    assert sorted(names) == sorted(f"w{k}-{i}" for k in range(4) for i in range(15))
    assert oct(Path(path).stat().st_mode & 0o777) == "0o600"
    assert plainfile.remove_user(path, "w0-0") and not plainfile.remove_user(path, "w0-0")
    assert plainfile.verifier_of(path, "w0-0") is None and plainfile.verifier_of(path, "w0-1")


def test_cli_add_list_grant_key_revoke_remove(tmp_path):
    made = _cli(tmp_path, "add", "alice", "--group", "alice-laptop", "--json")
    assert made.returncode == 0, made.stderr
    rec = json.loads(made.stdout)
    assert rec["kafka_username"] == "alice" and len(rec["kafka_password"]) >= 32
    assert rec["api_key"].startswith("alb_") and rec["sasl_mechanisms"] == ["SCRAM-SHA-512", "PLAIN"]
    assert _cli(tmp_path, "grant", "alice", "high_snr", "fast_riser").returncode == 0
    assert "already granted" in _cli(tmp_path, "grant", "alice", "high_snr").stdout
    assert _cli(tmp_path, "revoke", "alice", "fast_riser").returncode == 0
    key = json.loads(_cli(tmp_path, "key", "alice", "--label", "ci", "--json").stdout)
    listed = _cli(tmp_path, "list", "--json")
    assert listed.returncode == 0
    users = json.loads(listed.stdout)
    assert [u["name"] for u in users] == ["alice"]
    assert users[0]["grants"] == ["high_snr"] and users[0]["groups"] == ["alice-laptop"]
    assert {k["key_id"] for k in users[0]["keys"]} == {rec["key_id"], key["key_id"]}
    # no secret in the listing, the human one or the JSON one, and none in the database
    human = _cli(tmp_path, "list").stdout
    db_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("users.sqlite*"))
    for secret in (rec["api_key"], key["api_key"], rec["kafka_password"], rec["api_key"].split("_", 2)[2]):
        assert secret not in listed.stdout and secret not in human and secret.encode() not in db_bytes
    assert _cli(tmp_path, "revoke-key", key["key_id"]).returncode == 0
    users = json.loads(_cli(tmp_path, "list", "--json").stdout)
    assert [k["active"] for k in users[0]["keys"]] == [True, False]
    assert _cli(tmp_path, "remove", "alice").returncode == 0
    assert json.loads(_cli(tmp_path, "list", "--json").stdout) == []
    with sqlite3.connect(tmp_path / "users.sqlite") as db:  # keys and grants went with the user
        assert db.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM grants").fetchone()[0] == 0


@pytest.mark.parametrize("args,msg", [
    (("add", "bad.name"), "no '.'"),
    (("add", "ANONYMOUS"), "not 'ANONYMOUS'"),
    (("add", "x", "--group", "a b"), "consumer group"),
    (("grant", "nobody", "s"), "no user 'nobody'"),
    (("revoke-key", "0123456789ab"), "no API key"),
])
def test_cli_errors_are_one_line(tmp_path, args, msg):
    proc = _cli(tmp_path, *args)
    assert proc.returncode == 2 and msg in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_second_add_of_the_same_name_is_refused(tmp_path):
    assert _cli(tmp_path, "add", "bob").returncode == 0
    proc = _cli(tmp_path, "add", "bob")
    assert proc.returncode == 2 and "exists" in proc.stderr
    proc = _cli(tmp_path, "grant", "bob", "../etc")
    assert proc.returncode == 2 and "Kafka topic name" in proc.stderr


def test_rules_follow_grants_and_roles(tmp_path):
    from broker.access import NoStreamAccess
    from broker.access.records import UserRecords
    from broker.access.service import Users
    from broker.assemble import stream_router
    from broker.config import load_config

    cfg = load_config(env={})
    users = Users(cfg, UserRecords(tmp_path / "u.sqlite"), NoStreamAccess(), stream_router(cfg))
    users.add("al", groups=["shared-host"])
    users.grant("al", ["high_snr"])
    rules = set(users.expected_rules(users.records.get("al")))
    assert rules == {AccessRule("group", "al", "literal", "read"), AccessRule("group", "al.", "prefixed", "read"),
                     AccessRule("group", "shared-host", "literal", "read"),
                     AccessRule("topic", "albireo.loci.high_snr", "literal", "read"),
                     AccessRule("topic", "client.high_snr", "literal", "read")}
    # no user's group prefix covers another user's groups ("al." does not match "alice...")
    users.add("alice")
    assert not any(r.pattern == "prefixed" and "alice.x".startswith(r.name) for r in rules)
    users.add("pipe", role="pipeline")
    pipe = set(users.expected_rules(users.records.get("pipe")))
    assert AccessRule("topic", "albireo.loci.", "prefixed", "write") in pipe
    assert AccessRule("topic", "client.", "prefixed", "write") in pipe
    assert AccessRule("topic", "ztf-alerts", "literal", "read") in pipe
    assert not any(r.operation == "write" for r in rules)  # a consumer writes nothing
