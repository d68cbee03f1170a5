-- 008: the ChangeLog columns of the additive (delta) incremental refresh.
--
-- Release 1 added them in 007_view_deltas.sql together with the triggers and routines that fill
-- them; those now live in definitions/ (re-applied when they change) and this migration keeps
-- only the table change, so a fresh cluster gets the same ChangeLog. On a cluster that applied
-- 007 it changes nothing (ADD COLUMN IF NOT EXISTS). Numbers 002 and 004-007 belonged to release
-- 1's files and are never reused (the loader refuses a new file with a recorded number).

-- String literals, views and routines take the connection's character set: pin it.
SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci;

ALTER TABLE ChangeLog
    ADD COLUMN IF NOT EXISTS delta TINYINT UNSIGNED NOT NULL DEFAULT 0
        COMMENT '1: the columns below are the signed contribution; 0: recompute the key',
    ADD COLUMN IF NOT EXISTS d_lines INT NOT NULL DEFAULT 0 COMMENT 'order lines',
    ADD COLUMN IF NOT EXISTS d_orders INT NOT NULL DEFAULT 0 COMMENT 'orders',
    ADD COLUMN IF NOT EXISTS order_id INT UNSIGNED NULL COMMENT 'the order whose lines changed',
    ADD COLUMN IF NOT EXISTS d_quantity BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS d_amount DECIMAL(42,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS line_added_at DATETIME NULL COMMENT 'date of an added line',
    ADD COLUMN IF NOT EXISTS line_removed_at DATETIME NULL COMMENT 'date of a removed line',
    ADD COLUMN IF NOT EXISTS order_added_at DATETIME NULL COMMENT 'date of an added order',
    ADD COLUMN IF NOT EXISTS order_removed_at DATETIME NULL COMMENT 'date of a removed order';
