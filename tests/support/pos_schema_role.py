"""Run playbooks/pos_schema.yml (roles/pos_schema) and the project's modules through Ansible
against the test server: localhost, connection local, the fixture's socket."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.schema import REPO_ROOT, SQL_DIR

ANSIBLE = Path(sys.executable).parent


def recap_changed(output: str) -> int:
    """changed= of the play recap (asserting the recap is there)."""
    match = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+).*failed=(\d+)", output)
    assert match, output[-3000:]
    return int(match.group(1))


def run_module(name: str, module_args: dict, *args, inventory: Path | None = None) -> dict:
    """One ad-hoc run of a module of library/ through Ansible (localhost, connection local, the
    test's Python), as a task runs it: its JSON result (asserting it did not fail)."""
    target = ["-i", str(inventory)] if inventory else [
        "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"]
    result = subprocess.run(
        [str(ANSIBLE / "ansible"), "localhost", *target, "-o", "-m", name,
         "-a", json.dumps(module_args), *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.split("=>", 1)[1])


class PosSchemaRole:
    """One POS database, its ETL database and three accounts, built by the role from a copy of
    files/sql in ``tmp`` (tests edit the copy, never the repository)."""

    def __init__(self, server, tmp: Path, database: str, users: dict[str, str]):
        self.server, self.tmp, self.database = server, tmp, database
        self.etl_database = database + "_etl"
        self.users = users
        self.sql_dir = tmp / "sql"
        self.remote_dir = tmp / "remote"
        shutil.copytree(SQL_DIR, self.sql_dir, ignore=shutil.ignore_patterns("examples"))
        self.inventory = tmp / "inventory.yml"
        self.inventory.write_text(
            "all:\n  children:\n    primary:\n      hosts:\n        localhost:\n"
            "          ansible_connection: local\n"
            f"          ansible_python_interpreter: {sys.executable}\n"
            "          ansible_become: false\n")
        self.passwords = {k: secrets.token_urlsafe(18) for k in users}
        self.extra = tmp / "vars.json"
        self.extra.write_text(json.dumps({
            "pos_schema_database": database, "pos_schema_etl_database": self.etl_database,
            "pos_schema_login_unix_socket": server.socket,
            "pos_schema_sql_dir": str(self.sql_dir), "pos_schema_remote_dir": str(self.remote_dir),
            # One server and its clients on the socket: no cluster network to derive hosts from.
            "pos_schema_account_hosts": ["localhost"],
            **{f"pos_schema_{k}_user": v for k, v in users.items()},
            **{f"pos_schema_{k}_password": v for k, v in self.passwords.items()}}))
        self.extra.chmod(0o600)
        self.drop()

    def playbook(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(ANSIBLE / "ansible-playbook"), "-i", str(self.inventory), "-e", f"@{self.extra}",
             "playbooks/pos_schema.yml", *args],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)

    def module(self, name: str, module_args: dict, *args) -> dict:
        """One ad-hoc module run; its JSON result."""
        return run_module(name, module_args, *args, inventory=self.inventory)

    def drop(self) -> None:
        for user in self.users.values():
            self.server.client(f"DROP USER IF EXISTS '{user}'@'%', '{user}'@'localhost'")
        self.server.client(f"DROP DATABASE IF EXISTS {self.database}; "
                           f"DROP DATABASE IF EXISTS {self.etl_database}")
