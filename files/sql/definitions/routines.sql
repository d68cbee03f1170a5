-- The POS stored procedures: the current definition of every routine (re-applied whenever this
-- file changes, after the views and before the triggers).
--
-- Errors come back as SIGNAL SQLSTATE '45000' with a readable message. place_order and
-- refresh_materialized_view run their own transaction: calling them while a transaction is open
-- commits it first (START TRANSACTION / DDL cause an implicit commit). Created by root over the
-- unix socket (DEFINER root@localhost, who has SUPER), so the server keeps
-- log_bin_trust_function_creators=OFF: see docs/schema.md. Edit in place: CREATE OR REPLACE
-- only; a routine that is no longer used is dropped here (DROP ... IF EXISTS) so that existing
-- clusters lose it too.

-- String literals, views and routines take the connection's character set: pin it.
SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci;

-- Retired: called by the triggers of release 1 only (the delta triggers call log_line_delta).
DROP PROCEDURE IF EXISTS log_order_change;

DELIMITER //

-- --- The ChangeLog feed, called by the triggers (definitions/triggers.sql) ------------------

-- Appends one ChangeLog row per registered materialized view: the rows of that view whose
-- customer / product / day is given may be stale.
CREATE OR REPLACE PROCEDURE log_change(IN p_customer_id INT UNSIGNED,
                                       IN p_product_id INT UNSIGNED,
                                       IN p_sale_date DATE)
    MODIFIES SQL DATA
    COMMENT 'internal: called by the triggers'
BEGIN
    INSERT INTO ChangeLog (mv_table, customer_id, product_id, sale_date)
    SELECT mv_table, p_customer_id, p_product_id, p_sale_date FROM MaterializedView;
END //

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

-- --- The application's procedures ------------------------------------------------------------

-- Places an order with its lines in one transaction. p_lines is a JSON array such as
-- '[{"product_id": 1, "quantity": 2}, {"product_id": 7, "quantity": 1}]'. Stock is checked and
-- the current price used (by the OrderLine triggers, under a row lock on each product).
CREATE OR REPLACE PROCEDURE place_order(IN p_customer_id INT UNSIGNED, IN p_lines LONGTEXT,
                                        OUT p_order_id INT UNSIGNED)
    MODIFIES SQL DATA
    COMMENT 'place an order and its lines atomically'
BEGIN
    DECLARE v_lines INT;
    DECLARE v_products INT;
    DECLARE v_bad INT;
    DECLARE v_message VARCHAR(512);
    DECLARE v_product_id INT UNSIGNED;
    DECLARE v_quantity INT;
    DECLARE v_done BOOLEAN DEFAULT FALSE;
    -- Lines in product order: concurrent orders lock products in the same order (no deadlock).
    DECLARE line_cursor CURSOR FOR
        SELECT line.product_id, line.quantity
          FROM JSON_TABLE(p_lines, '$[*]' COLUMNS (
                   product_id INT UNSIGNED PATH '$.product_id',
                   quantity INT PATH '$.quantity')) AS line
         ORDER BY line.product_id;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_done = TRUE;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        SET p_order_id = NULL;
        RESIGNAL;
    END;

    SET p_order_id = NULL;
    IF p_lines IS NULL OR NOT JSON_VALID(p_lines) OR JSON_TYPE(p_lines) <> 'ARRAY'
            OR JSON_LENGTH(p_lines) = 0 THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT =
            'place_order: the lines must be a non-empty JSON array of {"product_id": n, "quantity": n}';
    END IF;
    SELECT COUNT(*), COUNT(DISTINCT product_id),
           SUM(NOT (product_id REGEXP '^[0-9]{1,9}$') OR NOT (quantity REGEXP '^[0-9]{1,9}$')
               OR product_id IS NULL OR quantity IS NULL OR quantity + 0 <= 0)
      INTO v_lines, v_products, v_bad
      FROM JSON_TABLE(p_lines, '$[*]' COLUMNS (
               product_id VARCHAR(64) PATH '$.product_id' NULL ON ERROR,
               quantity VARCHAR(64) PATH '$.quantity' NULL ON ERROR)) AS line;
    IF v_bad > 0 THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT =
            'place_order: every line needs a numeric product_id and a quantity greater than 0';
    END IF;
    IF v_products <> v_lines THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT =
            'place_order: a product appears on more than one line; add the quantities instead';
    END IF;

    START TRANSACTION;
    IF NOT EXISTS (SELECT 1 FROM Customer WHERE customer_id = p_customer_id) THEN
        SET v_message = CONCAT('place_order: unknown customer ', IFNULL(p_customer_id, 'NULL'));
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    INSERT INTO `Order` (customer_id, date_placed) VALUES (p_customer_id, NOW());
    SET p_order_id = LAST_INSERT_ID();
    OPEN line_cursor;
    line_loop: LOOP
        FETCH line_cursor INTO v_product_id, v_quantity;
        IF v_done THEN
            LEAVE line_loop;
        END IF;
        -- The OrderLine triggers check the stock and set the current price.
        INSERT INTO OrderLine (order_id, product_id, quantity)
        VALUES (p_order_id, v_product_id, v_quantity);
    END LOOP;
    CLOSE line_cursor;
    COMMIT;
END //

-- Changes a product's price; the Product trigger records the change in PriceHistory.
CREATE OR REPLACE PROCEDURE change_product_price(IN p_product_id INT UNSIGNED,
                                                 IN p_new_price DECIMAL(10,2))
    MODIFIES SQL DATA
    COMMENT 'change the current price of a product'
BEGIN
    DECLARE v_message VARCHAR(512);
    IF p_new_price IS NULL OR p_new_price < 0 THEN
        SET v_message = CONCAT('change_product_price: the price must be a number >= 0, got ',
                               IFNULL(p_new_price, 'NULL'));
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM Product WHERE product_id = p_product_id) THEN
        SET v_message = CONCAT('change_product_price: unknown product ',
                               IFNULL(p_product_id, 'NULL'));
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    UPDATE Product SET current_price = p_new_price WHERE product_id = p_product_id;
END //

-- A customer's report: three result sets (contact and totals, orders, products bought).
CREATE OR REPLACE PROCEDURE customer_report(IN p_customer_id INT UNSIGNED)
    READS SQL DATA
    COMMENT 'report on one customer'
BEGIN
    DECLARE v_message VARCHAR(512);
    IF NOT EXISTS (SELECT 1 FROM Customer WHERE customer_id = p_customer_id) THEN
        SET v_message = CONCAT('customer_report: unknown customer ', IFNULL(p_customer_id, 'NULL'));
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    SELECT d.customer_id, d.first_name, d.last_name, d.email, d.phone, d.address_line1,
           d.address_line2, d.zip, d.city, d.state,
           p.order_count, p.item_count, p.total_spent, p.first_order_at, p.last_order_at
      FROM CustomerDirectory AS d
      JOIN CustomerPurchases AS p ON p.customer_id = d.customer_id
     WHERE d.customer_id = p_customer_id;
    SELECT order_id, date_placed, date_shipped, status, line_count, item_count, order_total
      FROM OrderSummary WHERE customer_id = p_customer_id
     ORDER BY date_placed, order_id;
    SELECT product_id, product_name, order_count, total_quantity, total_spent, last_ordered_at
      FROM ProductBuyers WHERE customer_id = p_customer_id
     ORDER BY total_spent DESC, product_id;
END //

-- --- Materialized views: the server-side full refresh (the module mariadb_view_refresh does the
-- same and also incremental refreshes), and the refresh of all of them (definitions/events.sql)

-- FULL refresh of one registered materialized view: shadow table, then one atomic RENAME TABLE.
-- The ChangeLog rows committed while the view was being read may or may not be in the rebuilt
-- table; the rows that remain are turned into "recompute the key" rows (delta = 0), which is
-- right either way, instead of deltas that could be added twice.
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
