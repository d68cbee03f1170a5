"""Backup, prepare, restore and point-in-time recovery with Debian's mariadb-backup and
mariadb-binlog against real local servers (no cluster needed).

The pipeline is the one the mariadb_backup role runs on the hosts: ``mariadb-backup --backup
--stream=mbstream | zstd`` into a store directory, the manifest written by the store logic,
``mbstream -x`` + ``--prepare`` to verify, ``--move-back`` into a new datadir, and a roll-forward
with ``mariadb-binlog`` over binary logs archived by ``mariadb-binlog --read-from-remote-server
--raw --stop-never`` — the same command the archive service runs.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from mariadb_pos import backup as store

from tests.support.mariadb_instance import MariaDBInstance

pytestmark = pytest.mark.skipif(shutil.which("mariadb-backup") is None,
                                reason="needs Debian's mariadb-backup (scripts/bootstrap.sh)")

ARCHIVER_PASSWORD = "archiver-Secret-123"


def checksums(server: MariaDBInstance, database: str = "shop") -> dict[str, str]:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = %s ORDER BY 1", (database,))
        tables = [row[0] for row in cur.fetchall()]
        result = {}
        for table in tables:
            cur.execute(f"CHECKSUM TABLE `{database}`.`{table}`")
            result[table] = str(cur.fetchone()[1])
        return result


def gtid_pos(server: MariaDBInstance) -> str:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        return cur.fetchone()[0]


def write_orders(server: MariaDBInstance, first: int, count: int) -> None:
    with server.connect() as conn, conn.cursor() as cur:
        for n in range(first, first + count):
            cur.execute("INSERT INTO shop.orders (id, customer) VALUES (%s, %s)", (n, n % 7))
            cur.execute("INSERT INTO shop.order_lines (order_id, qty) VALUES (%s, %s), (%s, %s)",
                        (n, 1, n, 2))


def take_backup(source: MariaDBInstance, store_dir: Path) -> dict:
    """The role's pipeline, locally: stream + compress, extract, prepare, record."""
    started = store.utc_now()
    manifest = store.new_manifest("local-source", started)
    directory = Path(store.backups_dir(str(store_dir))) / manifest["id"]
    directory.mkdir(parents=True)
    store.write_manifest(str(directory), manifest)
    stream = directory / store.STREAM
    subprocess.run(
        ["bash", "-o", "pipefail", "-c",
         'mariadb-backup --no-defaults --backup --stream=mbstream --user=root '
         '--socket="$1" --target-dir="$2" 2>"$2/backup.log" | zstd -q -c > "$3"',
         "backup", source.socket, str(source.basedir), str(stream)],
        check=True)
    extracted = store_dir / "verify"
    prepared = extract_and_prepare(stream, extracted)
    result = store.complete_manifest(str(directory), str(extracted), store.utc_now(), prepared)
    shutil.rmtree(extracted)
    return dict(result, path=str(directory))


def extract_and_prepare(stream: Path, target: Path) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    extract = subprocess.run(["bash", "-o", "pipefail", "-c",
                              'zstd -q -d -c "$1" | mbstream -x -C "$2"', "x", str(stream),
                              str(target)], check=False, capture_output=True)
    if extract.returncode != 0:
        return False
    prepare = subprocess.run(["mariadb-backup", "--no-defaults", "--prepare",
                              f"--target-dir={target}"], check=False, capture_output=True)
    return prepare.returncode == 0


@pytest.fixture()
def source(tmp_path):
    server = MariaDBInstance(server_id=11).start()
    server.client(
        "CREATE DATABASE shop;"
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, customer INT NOT NULL) ENGINE=InnoDB;"
        "CREATE TABLE shop.order_lines (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT NOT NULL,"
        " qty INT NOT NULL, FOREIGN KEY (order_id) REFERENCES shop.orders (id)) ENGINE=InnoDB;"
        f"CREATE USER archiver@'127.0.0.1' IDENTIFIED BY '{ARCHIVER_PASSWORD}';"
        "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO archiver@'127.0.0.1';")
    write_orders(server, 1, 200)
    yield server
    server.stop()


def start_archiver(source: MariaDBInstance, directory: Path) -> subprocess.Popen:
    """The archive service's command: raw binlog copies, following the server forever."""
    directory.mkdir(parents=True, exist_ok=True)
    with source.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        first = cur.fetchall()[0][0]
    return subprocess.Popen(
        ["mariadb-binlog", "--no-defaults", "--read-from-remote-server", "--raw", "--stop-never",
         "--host=127.0.0.1", f"--port={source.port}", "--user=archiver",
         f"--password={ARCHIVER_PASSWORD}", f"--result-file={directory}/", first],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summaries(directory: Path) -> list[dict]:
    result = []
    for path in sorted(directory.glob("binlog.[0-9]*")):
        result.append(store.read_binlog("mariadb-binlog", str(path)))
    return result


def wait_for_archive(directory: Path, gtid: str, timeout: float = 60) -> list[dict]:
    wanted = store.parse_gtid_list(gtid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = summaries(directory)
        if found and store.gtid_reached(store.archive_end_state(found), wanted):
            return found
        time.sleep(0.3)
    raise AssertionError(f"the archive did not reach {gtid} within {timeout}s")


def restore(manifest: dict, plan: dict, workdir: Path) -> MariaDBInstance:
    """Extract, prepare, move back into a new server's datadir, start, then roll forward."""
    staging = workdir / "staging"
    assert extract_and_prepare(Path(manifest["path"]) / store.STREAM, staging)
    target = MariaDBInstance(basedir=workdir / "target", server_id=12)
    subprocess.run(["mariadb-backup", "--no-defaults", "--move-back", f"--target-dir={staging}",
                    f"--datadir={target.datadir}"], check=True, capture_output=True)
    target.start()
    target.client(f"RESET MASTER; SET GLOBAL gtid_binlog_state = '{plan['start_gtid']}';"
                  f"SET GLOBAL gtid_slave_pos = '{plan['start_gtid']}';")
    command = store.replay_command(plan)
    if command:
        events = subprocess.run(command, env={"TZ": "UTC"}, capture_output=True, check=True)
        subprocess.run(["mariadb", "--no-defaults", f"--socket={target.socket}", "--user=root"],
                       input=events.stdout, check=True, capture_output=True)
    return target


def test_point_in_time_recovery_to_a_gtid_brings_back_a_dropped_table(source, tmp_path):
    store_dir = tmp_path / "store"
    archive = tmp_path / "store" / "binlogs" / "local-source"
    archiver = start_archiver(source, archive)
    try:
        manifest = take_backup(source, store_dir)
        assert manifest["status"] == "good", manifest.get("error")
        assert manifest["gtid"] == gtid_pos(source)  # no writes while it ran
        write_orders(source, 1000, 50)
        source.client("FLUSH BINARY LOGS")  # the replay must cross a file boundary
        write_orders(source, 2000, 50)
        checkpoint, expected = gtid_pos(source), checksums(source)
        write_orders(source, 3000, 20)
        source.client("DROP TABLE shop.order_lines")
        archived = wait_for_archive(archive, gtid_pos(source))
    finally:
        archiver.terminate()
        archiver.wait()

    backups, problems = store.list_backups(str(store_dir))
    assert not problems
    plan = store.plan_restore(backups, archived, until=checkpoint)
    assert plan["backup"]["id"] == manifest["id"]
    assert len(plan["files"]) >= 2
    target = restore(manifest, plan, tmp_path / "restore")
    try:
        assert checksums(target) == expected
        assert gtid_pos(target) == checkpoint
        with target.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM shop.order_lines l "
                        "LEFT JOIN shop.orders o ON o.id = l.order_id WHERE o.id IS NULL")
            assert cur.fetchone()[0] == 0  # every line still has its order
            cur.execute("SELECT COUNT(*) FROM shop.orders")
            assert cur.fetchone()[0] == 300
    finally:
        target.stop()


def test_point_in_time_recovery_to_a_timestamp(source, tmp_path):
    store_dir = tmp_path / "store"
    archive = store_dir / "binlogs" / "local-source"
    archiver = start_archiver(source, archive)
    try:
        manifest = take_backup(source, store_dir)
        write_orders(source, 1000, 30)
        expected, checkpoint = checksums(source), gtid_pos(source)
        # mariadb-binlog's stop time has one-second resolution: the mistake comes a second later.
        time.sleep(1.1)
        until = store.format_time(store.utc_now())
        time.sleep(1.1)
        source.client("DELETE FROM shop.order_lines")
        archived = wait_for_archive(archive, gtid_pos(source))
    finally:
        archiver.terminate()
        archiver.wait()
    backups, _ = store.list_backups(str(store_dir))
    plan = store.plan_restore(backups, archived, until=until)
    assert plan["backup"]["id"] == manifest["id"]
    target = restore(manifest, plan, tmp_path / "restore")
    try:
        assert checksums(target) == expected
        assert gtid_pos(target) == checkpoint
    finally:
        target.stop()


def test_a_corrupted_stream_is_reported_and_never_restored(source, tmp_path):
    store_dir = tmp_path / "store"
    manifest = take_backup(source, store_dir)
    stream = Path(manifest["path"]) / store.STREAM
    data = bytearray(stream.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stream.write_bytes(bytes(data))
    backups, _ = store.list_backups(str(store_dir))
    with pytest.raises(store.BackupError, match=r"is corrupted: sha256 of .*backup\.mbstream\.zst"):
        store.verify_stream(backups[0])
    # Also the prepare step refuses it: a stream that does not prepare is never good.
    assert not extract_and_prepare(stream, tmp_path / "check")


def test_a_stream_that_does_not_prepare_is_recorded_as_failed(source, tmp_path):
    started = store.utc_now()
    manifest = store.new_manifest("local-source", started)
    directory = tmp_path / "store" / "backups" / manifest["id"]
    directory.mkdir(parents=True)
    store.write_manifest(str(directory), manifest)
    # A stream cut short, as when the network or the source died during the backup.
    full = subprocess.run(
        ["bash", "-o", "pipefail", "-c",
         'mariadb-backup --no-defaults --backup --stream=mbstream --user=root --socket="$1" '
         '--target-dir="$2" 2>/dev/null | zstd -q -c', "b", source.socket, str(source.basedir)],
        capture_output=True, check=True).stdout
    (directory / store.STREAM).write_bytes(full[: len(full) // 3])
    prepared = extract_and_prepare(directory / store.STREAM, tmp_path / "check")
    result = store.complete_manifest(str(directory), str(tmp_path / "check"), store.utc_now(),
                                     prepared)
    assert result["status"] == "failed"
    backups, _ = store.list_backups(str(tmp_path / "store"))
    with pytest.raises(store.BackupError, match="no good backup"):
        store.plan_restore(backups, [], None)
