"""Logic of this project's custom Ansible modules, importable without Ansible for unit tests."""
