# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of this project's custom Ansible modules, importable without Ansible for unit tests."""
