"""The mariadb_backup role's S3 copy (amazon.aws.s3_object) against a local moto server: a backup
of the store is uploaded, removed locally, downloaded again and still matches its manifest."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mariadb_pos import backup as store

from tests.support.moto_server import MotoServer

REPO = Path(__file__).resolve().parents[1]
BUCKET = "pos-backups"


def run_role(moto: MotoServer, tmp_path: Path, tasks_from: str,
             **variables) -> subprocess.CompletedProcess:
    playbook = tmp_path / f"{tasks_from}.yml"
    playbook.write_text(json.dumps([{
        "name": f"S3 {tasks_from}", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": tasks_from, "ansible.builtin.include_role": {
            "name": "mariadb_backup", "tasks_from": tasks_from}}],
    }]))
    extra = {"ansible_python_interpreter": sys.executable, "ansible_connection": "local",
             "mariadb_backup_store_host": "localhost", "mariadb_backup_s3_bucket": BUCKET,
             "mariadb_backup_s3_endpoint_url": moto.url, "mariadb_backup_s3_region": moto.region,
             **variables}
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", str(playbook),
         "-e", json.dumps(extra)],
        cwd=REPO, env=moto.env(ANSIBLE_NOCOLOR="1"), capture_output=True, text=True,
        timeout=300, check=False)


@pytest.fixture(scope="module")
def moto():
    with MotoServer(region="eu-central-1") as server:
        server.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": server.region})
        yield server


def make_backup(store_dir: Path) -> dict:
    manifest = store.new_manifest("db2", store.utc_now())
    directory = store_dir / "backups" / manifest["id"]
    directory.mkdir(parents=True)
    (directory / store.STREAM).write_bytes(bytes(range(256)) * 4096)
    manifest.update(status="good", end=manifest["start"], gtid="0-1-42",
                    size=(directory / store.STREAM).stat().st_size,
                    sha256=store.sha256_file(str(directory / store.STREAM)))
    store.write_manifest(str(directory), manifest)
    return dict(manifest, path=str(directory))


def test_a_backup_goes_to_s3_and_comes_back_unchanged(moto, tmp_path):
    store_dir = tmp_path / "store"
    backup = make_backup(store_dir)
    uploaded = run_role(moto, tmp_path, "s3_upload",
                        mariadb_backup_finished={"backup": backup})
    assert uploaded.returncode == 0, uploaded.stdout[-3000:]
    s3 = moto.client("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == [f"mariadb-backups/{backup['id']}/backup.mbstream.zst",
                    f"mariadb-backups/{backup['id']}/manifest.json"]
    again = run_role(moto, tmp_path, "s3_upload", mariadb_backup_finished={"backup": backup})
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]

    shutil.rmtree(backup["path"])
    downloaded = run_role(moto, tmp_path, "s3_download", mariadb_backup_restore_id=backup["id"],
                          mariadb_backup_store_dir=str(store_dir))
    assert downloaded.returncode == 0, downloaded.stdout[-3000:]
    backups, problems = store.list_backups(str(store_dir))
    assert not problems and [b["id"] for b in backups] == [backup["id"]]
    store.verify_stream(backups[0])  # same size and sha256 as recorded before the upload


def test_a_missing_bucket_fails_naming_it(moto, tmp_path):
    backup = make_backup(tmp_path / "store")
    failed = run_role(moto, tmp_path, "s3_upload", mariadb_backup_finished={"backup": backup},
                      mariadb_backup_s3_bucket="no-such-bucket")
    assert failed.returncode != 0
    assert "no-such-bucket" in failed.stdout
