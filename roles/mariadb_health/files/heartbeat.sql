-- The replication heartbeat (roles/mariadb_health): the primary writes the time every second;
-- a member's lag is how old the newest heartbeat it holds is (vars/main.yml, mariadb_health_lag_query).
-- Unlike Seconds_Behind_Master it keeps growing while a link is cut or a replica is stopped.
--
-- Created on the primary and replicated: replicas hold the event SLAVESIDE_DISABLED, and the
-- switchover/failover/rejoin of the mariadb_replication role enables it on the new primary and
-- disables it elsewhere, as for every event. The definer has no privilege beyond this table, so
-- read_only stops it on a member that was just made read-only (root's events would ignore
-- read_only and write errant transactions there; the role keeps each event's definer when it
-- enables or disables it, as ALTER EVENT would otherwise make root the definer).
-- Idempotent: every statement may run again.

CREATE TABLE IF NOT EXISTS heartbeat (
    server_id INT UNSIGNED NOT NULL PRIMARY KEY COMMENT 'the primary that wrote the beat',
    beat_at   DATETIME(6)  NOT NULL COMMENT 'UTC time of the beat on that primary'
) ENGINE=InnoDB COMMENT 'replication heartbeat, one row per server that was primary';

-- The event's definer: no login (locked), no privilege but writing this table and its event.
CREATE USER IF NOT EXISTS 'pos_heartbeat'@'localhost' ACCOUNT LOCK;
GRANT SELECT, INSERT, UPDATE ON heartbeat TO 'pos_heartbeat'@'localhost';
-- The scheduler runs an event only for a definer holding EVENT on its database (* = this one).
GRANT EVENT ON * TO 'pos_heartbeat'@'localhost';

CREATE OR REPLACE DEFINER = 'pos_heartbeat'@'localhost' EVENT heartbeat_beat
    ON SCHEDULE EVERY 1 SECOND
    ON COMPLETION PRESERVE
    ENABLE
    COMMENT 'replication heartbeat (roles/mariadb_health)'
    DO INSERT INTO heartbeat (server_id, beat_at) VALUES (@@GLOBAL.server_id, UTC_TIMESTAMP(6))
       ON DUPLICATE KEY UPDATE beat_at = VALUES(beat_at);
