#!/usr/bin/env python3
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lint check: the documented interface of every role and module matches the real one.

* roles/*/defaults/main.yml and roles/*/meta/argument_specs.yml (every entry point, e.g. main and
  a tasks_from one; a default may belong to any of them): every default is specified, every
  specified option has a default unless it is required, and a literal default has the specified
  type (and is one of the choices).
* library/*.py: the options of DOCUMENTATION, doc fragments included (as ``ansible-doc`` shows
  them), equal the module's argument spec: names, type, elements, default, required, choices and
  aliases. The spec is captured by running the module's main() with AnsibleModule replaced.

Usage: scripts/check_specs.py [ROOT]   (ROOT: a directory laid out as this repository; default
the repository). Prints one line per problem and exits 1 when there is any.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

TYPES = {"str": str, "path": str, "int": int, "bool": bool, "list": list, "dict": dict,
         "float": (int, float)}


def check_role(role: Path) -> list[str]:
    defaults_file = role / "defaults" / "main.yml"
    specs_file = role / "meta" / "argument_specs.yml"
    if not defaults_file.exists() and not specs_file.exists():
        return []
    where = f"roles/{role.name}"
    if not specs_file.exists():
        return [f"{where}: defaults/main.yml exists but meta/argument_specs.yml does not"]
    defaults = (yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}) or {}
    specs = yaml.safe_load(specs_file.read_text()) or {}
    # The options of every entry point (main, and e.g. check for tasks_from: check).
    options = {}
    for entry in (specs.get("argument_specs") or {}).values():
        options.update((entry or {}).get("options") or {})
    problems = []
    for name in defaults:
        if name not in options:
            problems.append(f"{where}: defaults/main.yml sets {name} but "
                            "meta/argument_specs.yml does not specify it")
    for name, spec in options.items():
        if name not in defaults:
            if not spec.get("required"):
                problems.append(f"{where}: meta/argument_specs.yml specifies {name} (not "
                                "required) but defaults/main.yml gives it no default")
            continue
        value = defaults[name]
        if isinstance(value, str) and "{{" in value:
            continue  # templated: its type is known only at run time
        expected = TYPES.get(spec.get("type", "str"))
        if expected and value is not None and not (
                isinstance(value, expected) and not (expected is int and isinstance(value, bool))):
            problems.append(f"{where}: default of {name} is {value!r}, not of type "
                            f"{spec.get('type', 'str')} as meta/argument_specs.yml says")
        if "choices" in spec and value not in spec["choices"]:
            problems.append(f"{where}: default of {name} ({value!r}) is not one of its choices "
                            f"{spec['choices']}")
    return problems


class _Captured(Exception):
    def __init__(self, kwargs):
        super().__init__("captured")
        self.kwargs = kwargs


def module_argument_spec(root: Path, path: Path) -> dict:
    """The argument_spec the module passes to AnsibleModule (its main() is run up to there)."""
    sys.path.insert(0, str(root / "module_utils"))
    # ansible.module_utils.mariadb_pos -> module_utils/mariadb_pos, as ansible.cfg arranges.
    for name in [n for n in sys.modules if n == "mariadb_pos" or n.startswith("mariadb_pos.")]:
        del sys.modules[name]
    package = importlib.import_module("mariadb_pos")
    sys.modules["ansible.module_utils.mariadb_pos"] = package
    for sub in (root / "module_utils" / "mariadb_pos").glob("*.py"):
        if sub.stem != "__init__":
            sys.modules[f"ansible.module_utils.mariadb_pos.{sub.stem}"] = importlib.import_module(
                f"mariadb_pos.{sub.stem}")

    def capture(*_args, **kwargs):
        raise _Captured(kwargs)

    try:
        spec = importlib.util.spec_from_file_location(f"_module_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.AnsibleModule = capture
        try:
            module.main()
        except _Captured as captured:
            return captured.kwargs.get("argument_spec") or {}
        raise RuntimeError(f"{path.name}: main() did not create an AnsibleModule")
    finally:
        sys.path.remove(str(root / "module_utils"))


def documented_options(root: Path, name: str) -> dict:
    """The module's options as ansible-doc shows them (doc fragments merged)."""
    ansible_doc = Path(sys.executable).parent / "ansible-doc"
    done = subprocess.run([str(ansible_doc), "-j", "-M", "library", name], cwd=root,  # noqa: S603
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "ANSIBLE_CONFIG": str(root / "ansible.cfg")})
    if done.returncode != 0:
        raise RuntimeError(f"ansible-doc {name} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)[name]["doc"].get("options") or {}


def _normal(option: dict) -> dict:
    return {
        "type": option.get("type", "str"),
        "elements": option.get("elements"),
        "default": option.get("default"),
        "required": bool(option.get("required", False)),
        "choices": list(option["choices"]) if option.get("choices") is not None else None,
        "aliases": sorted(option.get("aliases") or []),
    }


def check_module(root: Path, path: Path) -> list[str]:
    where = f"library/{path.name}"
    try:
        spec = module_argument_spec(root, path)
        documented = documented_options(root, path.stem)
    except Exception as error:  # reported as a finding, never a traceback
        return [f"{where}: cannot compare DOCUMENTATION and argument spec: {error}"]
    problems = []
    for name in sorted(set(spec) | set(documented)):
        if name not in documented:
            problems.append(f"{where}: option {name} is in the argument spec but not in "
                            "DOCUMENTATION")
        elif name not in spec:
            problems.append(f"{where}: option {name} is documented but not in the argument spec")
        else:
            real, doc = _normal(spec[name]), _normal(documented[name])
            for field, value in real.items():
                if doc[field] != value:
                    problems.append(f"{where}: option {name}: DOCUMENTATION says {field}="
                                    f"{doc[field]!r}, the argument spec {value!r}")
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parents[1]).resolve()
    problems = []
    for role in sorted((root / "roles").iterdir()):
        if role.is_dir():
            problems += check_role(role)
    for path in sorted((root / "library").glob("*.py")):
        problems += check_module(root, path)
    for problem in problems:
        print(problem)
    print(f"check_specs: {len(problems)} problem(s) in the roles' argument specs and the "
          "modules' DOCUMENTATION")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
