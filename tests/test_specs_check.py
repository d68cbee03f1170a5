"""scripts/check_specs.py (run in the lint stage): the roles' argument specs match their defaults
and the modules' DOCUMENTATION matches their argument specs -- and the check fails, naming the
file and the option, when a default or an option is added without its specification."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.support.schema import REPO_ROOT

CHECK = REPO_ROOT / "scripts" / "check_specs.py"


def run_check(root):
    return subprocess.run([sys.executable, str(CHECK), str(root)], capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture
def repo_copy(tmp_path):
    """The parts of the repository the check reads, in a directory the test may edit."""
    for name in ("library", "module_utils", "plugins", "roles"):
        shutil.copytree(REPO_ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "ansible.cfg", tmp_path / "ansible.cfg")
    return tmp_path


def test_the_repository_passes():
    result = run_check(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problem(s)" in result.stdout


def test_a_default_without_its_spec_fails(repo_copy):
    defaults = repo_copy / "roles" / "pos_schema" / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text() + "pos_schema_new_setting: 5\n")
    specs = repo_copy / "roles" / "pos_schema" / "meta" / "argument_specs.yml"
    specs.write_text(specs.read_text().replace(
        "        choices: [full, incremental]\n", "        choices: [full]\n"))
    result = run_check(repo_copy)
    assert result.returncode == 1
    assert ("roles/pos_schema: defaults/main.yml sets pos_schema_new_setting but "
            "meta/argument_specs.yml does not specify it") in result.stdout
    assert ("roles/pos_schema: default of pos_schema_refresh_mode ('incremental') is not one of "
            "its choices ['full']") in result.stdout


def test_a_spec_without_its_default_fails(repo_copy):
    specs = repo_copy / "roles" / "mariadb_server" / "meta" / "argument_specs.yml"
    specs.write_text(specs.read_text().rstrip("\n") + "\n      mariadb_server_new_option:\n"
                     "        type: int\n        description: Added without a default.\n")
    result = run_check(repo_copy)
    assert result.returncode == 1
    assert ("roles/mariadb_server: meta/argument_specs.yml specifies mariadb_server_new_option "
            "(not required) but defaults/main.yml gives it no default") in result.stdout


def test_an_option_without_its_documentation_fails(repo_copy):
    module = repo_copy / "library" / "mariadb_view_refresh.py"
    text = module.read_text()
    assert text.count('lock_timeout=dict(type="int", default=60),') == 1
    module.write_text(text.replace(
        'lock_timeout=dict(type="int", default=60),',
        'lock_timeout=dict(type="int", default=30),\n        dry_run=dict(type="bool"),'))
    result = run_check(repo_copy)
    assert result.returncode == 1
    assert ("library/mariadb_view_refresh.py: option dry_run is in the argument spec but not in "
            "DOCUMENTATION") in result.stdout
    assert ("library/mariadb_view_refresh.py: option lock_timeout: DOCUMENTATION says default=60, "
            "the argument spec 30") in result.stdout


def test_a_login_option_missing_from_the_doc_fragment_fails(repo_copy):
    fragment = repo_copy / "plugins" / "doc_fragments" / "mariadb_pos_login.py"
    text = fragment.read_text()
    start = text.index("  connect_timeout:")
    fragment.write_text(text[:start] + text[text.index("requirements:"):])
    result = run_check(repo_copy)
    assert result.returncode == 1
    for module in ("mariadb_schema", "mariadb_view_refresh"):  # the modules using the fragment
        assert (f"library/{module}.py: option connect_timeout is in the argument spec but not "
                "in DOCUMENTATION") in result.stdout
