"""The backup store's rules without a server: GTID arithmetic, `until` parsing, manifests,
retention and restore plans (which backup, which archived binlogs, which refusals)."""

from __future__ import annotations

import datetime
import json

import pytest
from mariadb_pos import backup as store

UTC = datetime.UTC
NOW = datetime.datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def make_backup(tmp_path, name, end, gtid, status="good"):
    directory = tmp_path / "backups" / name
    directory.mkdir(parents=True)
    (directory / store.STREAM).write_bytes(b"stream " + name.encode())
    manifest = {"format": 1, "id": name, "status": status, "source": "db2",
                "start": end, "end": end, "gtid": gtid, "stream": store.STREAM,
                "size": (directory / store.STREAM).stat().st_size,
                "sha256": store.sha256_file(str(directory / store.STREAM))}
    store.write_manifest(str(directory), manifest)
    return dict(manifest, path=str(directory))


def summary(name, start_state, first, last, first_time, last_time):
    return {"file": f"/store/binlogs/db1/{name}", "start_state": start_state,
            "first_gtid": first, "last_gtid": last, "first_time": first_time,
            "last_time": last_time, "transactions": 1}


def test_gtid_lists_parse_compare_and_refuse_garbage():
    assert store.parse_gtid_list("0-1-100,1-2-5") == {0: (1, 100), 1: (2, 5)}
    assert store.format_gtid_list({1: (2, 5), 0: (1, 100)}) == "0-1-100,1-2-5"
    assert store.gtid_reached({0: (1, 100)}, {0: (3, 99)})
    assert not store.gtid_reached({0: (1, 100)}, {0: (1, 101)})
    assert not store.gtid_reached({0: (1, 100)}, {1: (1, 1)})
    with pytest.raises(store.BackupError, match="not a MariaDB GTID list"):
        store.parse_gtid_list("0-1")
    with pytest.raises(store.BackupError, match="names domain 0 twice"):
        store.parse_gtid_list("0-1-1,0-2-2")


@pytest.mark.parametrize("text, kind", [
    ("0-1-1234", "gtid"), ("0-1-5,1-2-3", "gtid"), ("2026-11-29 07:50:00", "time"),
    ("2026-11-29T07:50:00Z", "time"), ("2026-11-29 07:50", "time"), ("2026-11-29", "time"),
])
def test_until_is_a_gtid_or_a_utc_time(text, kind):
    assert store.parse_until(text)[0] == kind


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01 00:00:00", "0-1-x", "1234"])
def test_until_garbage_is_refused_with_the_value(text):
    with pytest.raises(store.BackupError, match="until"):
        store.parse_until(text)


def test_empty_until_means_everything_archived():
    assert store.parse_until("") is None and store.parse_until("latest") is None


def test_binlog_info_of_both_server_series():
    assert store.parse_binlog_info("mariadb-bin.000003\t1234\t0-1-100\n") == {
        "binlog_file": "mariadb-bin.000003", "binlog_position": 1234, "gtid": "0-1-100"}
    with pytest.raises(store.BackupError, match="was the source server running with log_bin"):
        store.parse_binlog_info("", "/x/xtrabackup_binlog_info")


def test_binlog_info_listing_several_binlog_files_is_read_at_its_last_line():
    text = "mariadb-bin.000002\t1290\t[]\nmariadb-bin.000003\t385\t0-1-100\n"
    assert store.parse_binlog_info(text)["gtid"] == "0-1-100"


def test_a_backup_of_a_replica_continues_from_its_slave_position_not_its_own_binlog():
    # A replica's binlog info holds its own gtid_current_pos (here with a transaction of its own,
    # server 3); --slave-info records the primary's transactions the copied data holds.
    coordinates = store.backup_coordinates({
        "xtrabackup_binlog_info": "mariadb-bin.000004\t642\t0-3-101\n",
        "xtrabackup_slave_info": "SET GLOBAL gtid_slave_pos = '0-1-100';\n"
                                 "CHANGE MASTER TO master_use_gtid = slave_pos\n"}, "db4:/stage")
    assert coordinates["gtid"] == "0-1-100"
    assert coordinates["binlog_gtid"] == "0-3-101"
    assert coordinates["gtid_from"] == "xtrabackup_slave_info"


def test_a_backup_of_the_primary_continues_from_its_binlog_position():
    # 11.x file names; a primary has no slave info (mariadb-backup ignores --slave-info there).
    coordinates = store.backup_coordinates(
        {"mariadb_backup_binlog_info": "mariadb-bin.000007\t385\t0-1-100,1-1-4\n"})
    assert coordinates["gtid"] == "0-1-100,1-1-4"
    assert coordinates["gtid_from"] == "mariadb_backup_binlog_info"


def test_backup_coordinates_name_the_place_and_the_cause():
    with pytest.raises(store.BackupError, match=r"^db4:/stage holds neither "
                                                "mariadb_backup_binlog_info nor xtrabackup_"):
        store.backup_coordinates({"xtrabackup_slave_info": "SET GLOBAL gtid_slave_pos = '0-1-1';"},
                                 "db4:/stage")
    with pytest.raises(store.BackupError, match=r"gtid_slave_pos in db4:/stage/xtrabackup_slave"):
        store.backup_coordinates({"xtrabackup_binlog_info": "b.1\t4\t0-1-1\n",
                                  "xtrabackup_slave_info": "SET GLOBAL gtid_slave_pos = 'x';"},
                                 "db4:/stage")


def test_a_broken_manifest_is_named_by_file(tmp_path):
    directory = tmp_path / "backups" / "b1"
    directory.mkdir(parents=True)
    (directory / store.MANIFEST).write_text("{not json")
    backups, problems = store.list_backups(str(tmp_path))
    assert backups == []
    assert problems and str(directory / store.MANIFEST) in problems[0]
    (directory / store.MANIFEST).write_text(json.dumps({"format": 1, "id": "b1", "status": "good",
                                                        "source": "db2", "start": "x"}))
    with pytest.raises(store.BackupError, match=r"not a UTC time|must record"):
        store.read_manifest(str(directory))


def test_retention_keeps_the_newest_by_count_and_age_and_drops_failed(tmp_path):
    days = [make_backup(tmp_path, f"b{d}", f"2026-11-{d:02d}T01:00:00Z", f"0-1-{d}")
            for d in range(20, 30)]
    failed = make_backup(tmp_path, "f1", "2026-11-29T02:00:00Z", "", status="failed")
    backups = [*days, failed]
    expired = {m["id"] for m in store.expired_backups(backups, 3, 0, NOW)}
    assert expired == {f"b{d}" for d in range(20, 27)} | {"f1"}
    # keep_days adds everything younger than 5 days (from Nov 24 12:00 on).
    expired = {m["id"] for m in store.expired_backups(backups, 1, 5, NOW)}
    assert expired == {f"b{d}" for d in range(20, 25)} | {"f1"}
    with pytest.raises(store.BackupError, match="at least one"):
        store.expired_backups(backups, 0, 0, NOW)


def test_retention_spares_a_running_backup_and_removes_a_stale_one(tmp_path):
    running = dict(make_backup(tmp_path, "r1", "2026-11-29T11:30:00Z", "0-1-1"), status="running")
    stale = dict(make_backup(tmp_path, "r0", "2026-11-28T11:30:00Z", "0-1-1"), status="running")
    expired = [m["id"] for m in store.expired_backups([running, stale], 1, 0, NOW)]
    assert expired == ["r0"]


def test_remove_backup_never_leaves_the_store(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(store.BackupError, match="refusing to remove"):
        store.remove_backup({"path": str(outside)}, str(tmp_path / "store"))
    assert outside.exists()


ARCHIVE = [
    summary("mariadb-bin.000001", "", "0-1-1", "0-1-50", "2026-11-29T08:00:00Z",
            "2026-11-29T09:00:00Z"),
    summary("mariadb-bin.000002", "0-1-50", "0-1-51", "0-1-120", "2026-11-29T09:00:01Z",
            "2026-11-29T11:00:00Z"),
]


def test_plan_chooses_the_newest_backup_before_the_target_and_the_files_from_its_position(
        tmp_path):
    backups = [make_backup(tmp_path, "b1", "2026-11-29T08:30:00Z", "0-1-30"),
               make_backup(tmp_path, "b2", "2026-11-29T09:30:00Z", "0-1-80")]
    plan = store.plan_restore(backups, ARCHIVE, "0-1-100")
    assert plan["backup"]["id"] == "b2"
    assert [f.rsplit("/", 1)[1] for f in plan["files"]] == ["mariadb-bin.000002"]
    assert store.replay_command(plan) == ["mariadb-binlog", "--start-position=0-1-80",
                                          "--stop-position=0-1-100", *plan["files"]]
    plan = store.plan_restore(backups, ARCHIVE, "0-1-60")
    assert plan["backup"]["id"] == "b1" and len(plan["files"]) == 2
    plan = store.plan_restore(backups, ARCHIVE, "2026-11-29 09:10:00")
    assert plan["backup"]["id"] == "b1"
    assert plan["stop"] == ["--stop-datetime=2026-11-29 09:10:00"]
    exact = store.plan_restore(backups, ARCHIVE, "0-1-80")
    assert exact["backup"]["id"] == "b2" and exact["files"] == []
    latest = store.plan_restore(backups, ARCHIVE, None)
    assert latest["backup"]["id"] == "b2" and latest["target_gtid"] == "0-1-120"


@pytest.mark.parametrize("until, message", [
    ("0-1-10", "is before the oldest usable backup b1"),
    ("2026-11-29 08:00:00", "is before the end of the oldest usable backup b1"),
    ("0-1-121", "is after the newest archived transaction"),
    ("2026-11-29 11:00:01", "is after the newest archived transaction"),
])
def test_plan_refuses_targets_outside_the_backups_and_the_archive(tmp_path, until, message):
    backups = [make_backup(tmp_path, "b1", "2026-11-29T08:30:00Z", "0-1-30")]
    with pytest.raises(store.BackupError, match=message):
        store.plan_restore(backups, ARCHIVE, until)


def test_plan_reports_a_gap_between_the_backup_and_the_archive(tmp_path):
    backups = [make_backup(tmp_path, "b1", "2026-11-29T08:30:00Z", "0-1-30")]
    with pytest.raises(store.BackupError, match="transactions in between are missing"):
        store.plan_restore(backups, ARCHIVE[1:], "0-1-100")


def test_plan_names_an_unknown_backup_and_skips_failed_ones(tmp_path):
    backups = [make_backup(tmp_path, "b1", "2026-11-29T08:30:00Z", "0-1-30"),
               make_backup(tmp_path, "bad", "2026-11-29T10:30:00Z", "", status="failed")]
    assert store.plan_restore(backups, ARCHIVE, None)["backup"]["id"] == "b1"
    with pytest.raises(store.BackupError, match="no good backup named 'bad'"):
        store.plan_restore(backups, ARCHIVE, None, backup="bad")


# mariadb-binlog's output: one server in the state, and (after any switchover) several, when it
# wraps the Gtid list over lines.
BINLOG_TEXTS = {
    "one server": (
        "#261129  7:49:51 server id 7  end_log_pos 256 CRC32 0x1 \tStart: binlog v 4\n"
        "#261129  7:49:51 server id 7  end_log_pos 299 CRC32 0x2 \tGtid list [0-7-7]\n"
        "#261129  7:49:52 server id 7  end_log_pos 381 CRC32 0x3 \tGTID 0-7-8 trans\n"
        "#261129  7:50:03 server id 7  end_log_pos 481 CRC32 0x4 \tGTID 0-7-9 trans\n",
        dict(start_state="0-7-7", first_gtid="0-7-8", last_gtid="0-7-9",
             last_time="2026-11-29T07:50:03Z", transactions=2)),
    "list wrapped": (
        "#261129 11:53:57 server id 2  end_log_pos 315 CRC32 0xaa \tGtid list [0-1-3646,\n"
        "# 0-2-6466]\n"
        "#261129 11:53:58 server id 2  end_log_pos 402 CRC32 0xba \tGTID 0-2-6467 trans\n",
        dict(start_state="0-1-3646,0-2-6466", first_gtid="0-2-6467", last_gtid="0-2-6467",
             last_time="2026-11-29T11:53:58Z", transactions=1)),
}


@pytest.mark.parametrize("case", BINLOG_TEXTS)
def test_summarize_reads_mariadb_binlog_output(case):
    text, expected = BINLOG_TEXTS[case]
    result = store.summarize_binlog(text, "/a/mariadb-bin.000002")
    assert {key: result[key] for key in expected} == expected


def test_summarize_refuses_what_is_no_binary_log():
    with pytest.raises(store.BackupError, match="not a MariaDB binary log"):
        store.summarize_binlog("garbage", "/a/x.000001")


@pytest.mark.parametrize("content", [b"", b"\xfebin"], ids=["empty", "magic only"])
def test_a_newest_file_the_archiver_just_opened_holds_nothing_yet(tmp_path, content):
    # The archive service restarting refetches its newest file: for a moment it is empty or holds
    # only the binlog magic. As the newest file that is "nothing archived yet", not an error; as
    # an older file it is a broken archive, named.
    path = tmp_path / "mariadb-bin.000004"
    path.write_bytes(content)
    assert store.read_binlog("mariadb-binlog", str(path), may_be_truncated=True) is None
    with pytest.raises(store.BackupError, match=str(path)):
        store.read_binlog("mariadb-binlog", str(path))


def test_a_binlog_files_gtid_list_after_a_switchover_is_read_per_domain():
    # The Gtid list event of a file begun after a switchover holds the binlog state: domain 0 once
    # per server that wrote in it (found by bench_backup at 1,000,000 lines after failovers).
    state = "0-238418113-18353,0-203934134-21116,1-7-5"
    assert store.parse_gtid_state(state) == {0: (203934134, 21116), 1: (7, 5)}
    summaries = [{"file": "/a/mariadb-bin.000004", "start_state": state,
                  "last_gtid": "0-203934134-21200"}]
    assert store.format_gtid_list(store.archive_end_state(summaries)) == "0-203934134-21200,1-7-5"
    with pytest.raises(store.BackupError, match="not a MariaDB GTID list"):
        store.parse_gtid_state("0-1-5,garbage")
    # A position someone types stays strict: one GTID per domain.
    with pytest.raises(store.BackupError, match="names domain 0 twice"):
        store.parse_gtid_list("0-1-5,0-2-6", "until")
