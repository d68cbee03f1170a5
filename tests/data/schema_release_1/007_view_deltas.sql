-- 007: additive (delta) ChangeLog rows for the incremental refresh of the materialized views.
--
-- The triggers of 004 log, per registered materialized view, the KEYS whose rows may be stale;
-- the incremental refresh recomputed those keys from the view. Random changes to 1 % of the
-- orders touch most days and many customers, so recomputing could not be made cheap enough.
-- From here on the order and order-line triggers also log the signed CONTRIBUTION of the
-- change (delta = 1): order, lines, orders, quantity, amount, and the order date added or
-- removed (for first/last-order columns). The triggers read nothing but the order's customer
-- and date (no locking read, so concurrent orders never wait for each other); whether an order
-- gained its first or lost its last line is worked out by the refresh, in its snapshot. The refresh adds the summed contributions
-- to the rows of the keys (col = col + delta), deletes a row whose count reaches 0, and still
-- recomputes from the view what a delta cannot give exactly (names, a removed first/last date,
-- keys new to the table, rows logged with delta = 0). See docs/schema.md.
--
-- Same ChangeLog rows as before (one per registered view and change, same key columns), so
-- every reader of ChangeLog keeps working; the new columns default to "recompute the key".
-- Re-runnable: ADD COLUMN IF NOT EXISTS, CREATE OR REPLACE (004's triggers are replaced here;
-- 004 itself is left unchanged, as roles/pos_schema refuses an edited migration).

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

DELIMITER //

-- One delta ChangeLog row per registered materialized view (same keys as log_change).
CREATE OR REPLACE PROCEDURE log_delta(IN p_customer_id INT UNSIGNED,
                                      IN p_product_id INT UNSIGNED,
                                      IN p_sale_date DATE, IN p_order_id INT UNSIGNED,
                                      IN p_lines INT, IN p_orders INT,
                                      IN p_quantity BIGINT, IN p_amount DECIMAL(42,2),
                                      IN p_line_added_at DATETIME,
                                      IN p_line_removed_at DATETIME,
                                      IN p_order_added_at DATETIME,
                                      IN p_order_removed_at DATETIME)
    MODIFIES SQL DATA
    COMMENT 'internal: called by the triggers'
BEGIN
    INSERT INTO ChangeLog (mv_table, customer_id, product_id, sale_date, delta, order_id,
                           d_lines, d_orders, d_quantity, d_amount, line_added_at,
                           line_removed_at, order_added_at, order_removed_at)
    SELECT mv_table, p_customer_id, p_product_id, p_sale_date, 1, p_order_id, p_lines,
           p_orders, p_quantity, p_amount, p_line_added_at, p_line_removed_at,
           p_order_added_at, p_order_removed_at
      FROM MaterializedView;
END //

-- A line added to (p_sign = 1) or removed from (p_sign = -1) an order.
CREATE OR REPLACE PROCEDURE log_line_delta(IN p_sign INT, IN p_order_id INT UNSIGNED,
                                           IN p_product_id INT UNSIGNED, IN p_quantity INT,
                                           IN p_unit_price DECIMAL(10,2))
    MODIFIES SQL DATA
    COMMENT 'internal: called by the triggers'
BEGIN
    DECLARE v_customer_id INT UNSIGNED DEFAULT NULL;
    DECLARE v_placed DATETIME DEFAULT NULL;
    SELECT customer_id, date_placed INTO v_customer_id, v_placed
    FROM `Order` WHERE order_id = p_order_id;
    IF v_customer_id IS NOT NULL THEN
        CALL log_delta(v_customer_id, p_product_id, DATE(v_placed), p_order_id, p_sign, 0,
                       p_sign * p_quantity, p_sign * p_quantity * p_unit_price,
                       IF(p_sign > 0, v_placed, NULL), IF(p_sign < 0, v_placed, NULL),
                       NULL, NULL);
    END IF;
END //

CREATE OR REPLACE TRIGGER OrderLine_after_insert AFTER INSERT ON OrderLine FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    UPDATE Product SET quantity_on_hand = quantity_on_hand - NEW.quantity
    WHERE product_id = NEW.product_id;
    CALL log_line_delta(1, NEW.order_id, NEW.product_id, NEW.quantity, NEW.unit_price);
END //

CREATE OR REPLACE TRIGGER OrderLine_after_update AFTER UPDATE ON OrderLine FOR EACH ROW
trg: BEGIN
    DECLARE v_customer_id INT UNSIGNED DEFAULT NULL;
    DECLARE v_placed DATETIME DEFAULT NULL;
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    IF NOT (NEW.product_id <=> OLD.product_id AND NEW.quantity <=> OLD.quantity) THEN
        UPDATE Product SET quantity_on_hand = quantity_on_hand + OLD.quantity
        WHERE product_id = OLD.product_id;
        UPDATE Product SET quantity_on_hand = quantity_on_hand - NEW.quantity
        WHERE product_id = NEW.product_id;
    END IF;
    IF NEW.order_id <=> OLD.order_id AND NEW.product_id <=> OLD.product_id THEN
        -- Same line: one row with the net difference (quantity and/or price).
        SELECT customer_id, date_placed INTO v_customer_id, v_placed
        FROM `Order` WHERE order_id = OLD.order_id;
        IF v_customer_id IS NOT NULL THEN
            CALL log_delta(v_customer_id, OLD.product_id, DATE(v_placed), OLD.order_id, 0, 0,
                           NEW.quantity - OLD.quantity,
                           NEW.quantity * NEW.unit_price - OLD.quantity * OLD.unit_price,
                           NULL, NULL, NULL, NULL);
        END IF;
    ELSE
        -- Moved to another product and/or order: removed from the old, added to the new.
        CALL log_line_delta(-1, OLD.order_id, OLD.product_id, OLD.quantity, OLD.unit_price);
        CALL log_line_delta(1, NEW.order_id, NEW.product_id, NEW.quantity, NEW.unit_price);
    END IF;
END //

CREATE OR REPLACE TRIGGER OrderLine_after_delete AFTER DELETE ON OrderLine FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    UPDATE Product SET quantity_on_hand = quantity_on_hand + OLD.quantity
    WHERE product_id = OLD.product_id;
    CALL log_line_delta(-1, OLD.order_id, OLD.product_id, OLD.quantity, OLD.unit_price);
END //

-- A new order has no lines yet: it counts for its customer only.
CREATE OR REPLACE TRIGGER Order_after_insert AFTER INSERT ON `Order` FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    CALL log_delta(NEW.customer_id, NULL, DATE(NEW.date_placed), NEW.order_id, 0, 1, 0, 0,
                   NULL, NULL, NEW.date_placed, NULL);
END //

-- Another customer or date moves the whole order: the keys are recomputed (delta = 0), as in
-- 004. An order_id change alone changes no materialized view (its lines follow by CASCADE).
CREATE OR REPLACE TRIGGER Order_after_update AFTER UPDATE ON `Order` FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    IF NOT (NEW.customer_id <=> OLD.customer_id AND NEW.date_placed <=> OLD.date_placed) THEN
        CALL log_change(OLD.customer_id, NULL, DATE(OLD.date_placed));
        IF NOT (NEW.customer_id <=> OLD.customer_id
                AND DATE(NEW.date_placed) <=> DATE(OLD.date_placed)) THEN
            CALL log_change(NEW.customer_id, NULL, DATE(NEW.date_placed));
        END IF;
    END IF;
END //

-- Its lines are gone already (OrderLine's foreign key is ON DELETE RESTRICT).
CREATE OR REPLACE TRIGGER Order_after_delete AFTER DELETE ON `Order` FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    CALL log_delta(OLD.customer_id, NULL, DATE(OLD.date_placed), OLD.order_id, 0, -1, 0, 0,
                   NULL, NULL, NULL, OLD.date_placed);
END //

-- As in 005, plus: the ChangeLog rows committed while the view was being read may or may not
-- be in the rebuilt table; the rows that remain are turned into "recompute the key" rows
-- (delta = 0), which is right either way, instead of deltas that could be added twice.
CREATE OR REPLACE PROCEDURE refresh_materialized_view(IN p_mv_table VARCHAR(64))
    MODIFIES SQL DATA
    COMMENT 'full refresh of a materialized view (shadow table + atomic RENAME)'
BEGIN
    DECLARE v_view VARCHAR(64) DEFAULT NULL;
    DECLARE v_columns TEXT;
    DECLARE v_rows BIGINT UNSIGNED;
    DECLARE v_message VARCHAR(512);
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        -- Never keep the lock after an error (RELEASE_LOCK of a lock not held does nothing).
        DO RELEASE_LOCK(CONCAT('pos_mv_refresh:', DATABASE(), '.', IFNULL(p_mv_table, '')));
        RESIGNAL;
    END;

    SELECT source_view INTO v_view FROM MaterializedView WHERE mv_table = BINARY p_mv_table;
    IF v_view IS NULL OR p_mv_table NOT REGEXP '^[A-Za-z][A-Za-z0-9_]*$'
            OR v_view NOT REGEXP '^[A-Za-z][A-Za-z0-9_]*$' THEN
        SET v_message = CONCAT('refresh_materialized_view: ', QUOTE(IFNULL(p_mv_table, 'NULL')),
                               ' is not a registered materialized view');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    IF GET_LOCK(CONCAT('pos_mv_refresh:', DATABASE(), '.', p_mv_table), 60) IS NOT TRUE THEN
        SET v_message = CONCAT('refresh_materialized_view: another refresh of ', p_mv_table,
                               ' is still running');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    SELECT GROUP_CONCAT(CONCAT('`', REPLACE(COLUMN_NAME, '`', '``'), '`')
                        ORDER BY ORDINAL_POSITION SEPARATOR ', ')
      INTO v_columns
      FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = p_mv_table;
    -- The ChangeLog rows committed up to now are covered by the rebuild below (it reads later).
    CREATE OR REPLACE TEMPORARY TABLE pos_mv_consumed ENGINE=InnoDB AS
        SELECT change_id FROM ChangeLog WHERE mv_table = p_mv_table;

    SET @pos_mv_sql = CONCAT('DROP TABLE IF EXISTS `', p_mv_table, '__shadow`, `',
                             p_mv_table, '__old`');
    PREPARE pos_mv_stmt FROM @pos_mv_sql;
    EXECUTE pos_mv_stmt;
    SET @pos_mv_sql = CONCAT('CREATE TABLE `', p_mv_table, '__shadow` LIKE `', p_mv_table, '`');
    PREPARE pos_mv_stmt FROM @pos_mv_sql;
    EXECUTE pos_mv_stmt;
    SET @pos_mv_sql = CONCAT('INSERT INTO `', p_mv_table, '__shadow` (', v_columns, ') SELECT ',
                             v_columns, ' FROM `', v_view, '`');
    PREPARE pos_mv_stmt FROM @pos_mv_sql;
    -- Consistent non-locking read of the base tables: writers are not blocked meanwhile.
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    EXECUTE pos_mv_stmt;
    SET v_rows = ROW_COUNT();
    COMMIT;
    SET @pos_mv_sql = CONCAT('RENAME TABLE `', p_mv_table, '` TO `', p_mv_table, '__old`, `',
                             p_mv_table, '__shadow` TO `', p_mv_table, '`');
    PREPARE pos_mv_stmt FROM @pos_mv_sql;
    EXECUTE pos_mv_stmt;
    SET @pos_mv_sql = CONCAT('DROP TABLE `', p_mv_table, '__old`');
    PREPARE pos_mv_stmt FROM @pos_mv_sql;
    EXECUTE pos_mv_stmt;
    DEALLOCATE PREPARE pos_mv_stmt;
    DELETE ChangeLog FROM ChangeLog JOIN pos_mv_consumed USING (change_id);
    DROP TEMPORARY TABLE pos_mv_consumed;
    UPDATE ChangeLog SET delta = 0 WHERE mv_table = p_mv_table AND delta = 1;
    UPDATE MaterializedView
       SET last_refresh_mode = 'full', last_refreshed_at = NOW(6), row_count = v_rows
     WHERE mv_table = p_mv_table;
    COMMIT;
    DO RELEASE_LOCK(CONCAT('pos_mv_refresh:', DATABASE(), '.', p_mv_table));
    SELECT p_mv_table AS mv_table, v_rows AS row_count;
END //

DELIMITER ;
