#!/usr/bin/python3
"""Test fixture of the scheduled_sync scenario: stands in for scripts/pgmigrate-run (the ansible-runner entry point).

Appends one JSON line per run to <project>/artifacts/fake-runs.jsonl: its arguments, working directory,
user and group, a few environment variables, and what it found in the vault password file it was given
(readable or not, the SHA-256 of its content: never the password itself). Then prints a few lines like
the playbook run. <project>/fixture-behaviour, when present, says how the run ends: "exit N" or "sleep N".
"""

import grp
import hashlib
import json
import os
import pwd
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]  # <project>/scripts/pgmigrate-run


def vault_file():
    args = sys.argv[1:]
    if "--vault-password-file" in args:
        return args[args.index("--vault-password-file") + 1]
    return None


def inspect_vault(path):
    if path is None:
        return {"vault_sha256": None, "vault_error": "no --vault-password-file"}
    try:
        content = Path(path).read_text()
    except OSError as error:
        return {"vault_sha256": None, "vault_error": str(error)}
    return {"vault_sha256": hashlib.sha256(content.strip().encode()).hexdigest(), "vault_error": None,
            "vault_mode": oct(os.stat(path).st_mode & 0o777)}


def can_read(path):
    try:
        Path(path).read_bytes()
    except OSError:
        return False
    return True


def main():
    behaviour = (PROJECT / "fixture-behaviour").read_text().split() if (PROJECT / "fixture-behaviour").exists() else []
    status = Path("/proc/self/status").read_text()
    record = {
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "user": pwd.getpwuid(os.geteuid()).pw_name,
        "group": grp.getgrgid(os.getegid()).gr_name,
        "no_new_privs": "NoNewPrivs:\t1" in status,
        "env": {name: os.environ.get(name) for name in
                ("LANG", "PATH", "CREDENTIALS_DIRECTORY", "INVOCATION_ID", "FIXTURE_VAULT_SOURCE")},
        "vault_file": vault_file(),
        "source_readable": can_read(os.environ.get("FIXTURE_VAULT_SOURCE", "/nonexistent")),
        "behaviour": behaviour,
        "started": time.time(),
        **inspect_vault(vault_file()),
    }
    with open(PROJECT / "artifacts" / "fake-runs.jsonl", "a") as runs:
        runs.write(json.dumps(record) + "\n")
    print("PLAY [stand-in staging sync] ***", flush=True)
    args = sys.argv[1:]
    playbook = args[args.index("--playbook") + 1] if "--playbook" in args else "?"
    print(f"stand-in ansible-playbook ran {playbook} as {record['user']}", flush=True)
    if behaviour[:1] == ["sleep"]:
        time.sleep(float(behaviour[1]))
    if behaviour[:1] == ["exit"]:
        print(f"stand-in ansible-playbook fails with exit status {behaviour[1]}", file=sys.stderr, flush=True)
        return int(behaviour[1])
    print("PLAY RECAP *** stand-in: ok=1 changed=0 failed=0", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
