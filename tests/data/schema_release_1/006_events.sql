-- 006: a nightly FULL refresh of every materialized view, scheduled by a MariaDB EVENT.
--
-- The incremental refreshes (module mariadb_view_refresh, run by the playbooks) follow the
-- ChangeLog; this event is the safety net for what bypasses the triggers (bulk loads, ids changed
-- through ON UPDATE CASCADE). It runs only where event_scheduler=ON (the server role's setting);
-- on the replicas the replicated event is SLAVESIDE_DISABLED by the server itself, and after a
-- failover the new primary needs ALTER EVENT refresh_materialized_views_nightly ENABLE.
-- Re-runnable: CREATE OR REPLACE.

SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci;

DELIMITER //

CREATE OR REPLACE PROCEDURE refresh_all_materialized_views()
    MODIFIES SQL DATA
    COMMENT 'full refresh of every registered materialized view'
BEGIN
    DECLARE v_done BOOLEAN DEFAULT FALSE;
    DECLARE v_table VARCHAR(64);
    DECLARE mv_cursor CURSOR FOR SELECT mv_table FROM MaterializedView ORDER BY mv_table;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_done = TRUE;
    OPEN mv_cursor;
    mv_loop: LOOP
        FETCH mv_cursor INTO v_table;
        IF v_done THEN
            LEAVE mv_loop;
        END IF;
        CALL refresh_materialized_view(v_table);
    END LOOP;
    CLOSE mv_cursor;
END //

DELIMITER ;

CREATE OR REPLACE EVENT refresh_materialized_views_nightly
    ON SCHEDULE EVERY 1 DAY STARTS (CURRENT_DATE + INTERVAL 1 DAY + INTERVAL 3 HOUR)
    ON COMPLETION PRESERVE
    ENABLE
    COMMENT 'nightly full refresh of the materialized views (files/sql/006)'
    DO CALL refresh_all_materialized_views();
