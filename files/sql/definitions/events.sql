-- The POS events: the current definition of every scheduled event (re-applied whenever this file
-- changes, last).
--
-- A nightly FULL refresh of every materialized view. The incremental refreshes (module
-- mariadb_view_refresh, run by the playbooks) follow the ChangeLog; this event is the safety net
-- for what bypasses the triggers (bulk loads, ids changed through ON UPDATE CASCADE). It runs only
-- where event_scheduler=ON (the server role's setting); on the replicas the replicated event is
-- SLAVESIDE_DISABLED by the server itself, and after a failover the new primary needs
-- ALTER EVENT refresh_materialized_views_nightly ENABLE. The procedure it calls is in
-- definitions/routines.sql. (Its COMMENT still names files/sql/006, where release 1 defined it:
-- kept so that upgraded clusters keep byte-identical definitions.)

SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE OR REPLACE EVENT refresh_materialized_views_nightly
    ON SCHEDULE EVERY 1 DAY STARTS (CURRENT_DATE + INTERVAL 1 DAY + INTERVAL 3 HOUR)
    ON COMPLETION PRESERVE
    ENABLE
    COMMENT 'nightly full refresh of the materialized views (files/sql/006)'
    DO CALL refresh_all_materialized_views();
