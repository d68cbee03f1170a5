-- 004: triggers (milestone 6) and the ChangeLog feed for incremental refresh.
--
-- Created by root over the unix socket (DEFINER root@localhost, who has SUPER), so the server
-- keeps log_bin_trust_function_creators=OFF: see docs/schema.md. Re-runnable: CREATE OR REPLACE
-- (never a window in which a table has no trigger).
-- Every data trigger does nothing while the session variable @pos_bulk_load = 1: the ETL fills
-- OrderLine.unit_price itself, keeps the CSV's stock, adds no PriceHistory rows and bypasses the
-- ChangeLog (the playbook runs a FULL refresh of the materialized views after a load).

-- String literals, views and routines take the connection's character set: pin it.
SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci;

DELIMITER //

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

-- Logs the customer and day of an order (and a product when given).
CREATE OR REPLACE PROCEDURE log_order_change(IN p_order_id INT UNSIGNED,
                                             IN p_product_id INT UNSIGNED)
    MODIFIES SQL DATA
    COMMENT 'internal: called by the triggers'
BEGIN
    DECLARE v_customer_id INT UNSIGNED DEFAULT NULL;
    DECLARE v_sale_date DATE DEFAULT NULL;
    SELECT customer_id, DATE(date_placed) INTO v_customer_id, v_sale_date
    FROM `Order` WHERE order_id = p_order_id;
    IF v_customer_id IS NOT NULL THEN
        CALL log_change(v_customer_id, p_product_id, v_sale_date);
    END IF;
END //

-- PriceHistory exactly when the price changes (NULL-safe); ChangeLog when the name changes.
CREATE OR REPLACE TRIGGER Product_after_update AFTER UPDATE ON Product FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    IF NOT (OLD.current_price <=> NEW.current_price) THEN
        INSERT INTO PriceHistory (product_id, old_price, new_price)
        VALUES (NEW.product_id, OLD.current_price, NEW.current_price);
    END IF;
    IF NOT (OLD.name <=> NEW.name) THEN
        CALL log_change(NULL, NEW.product_id, NULL);
    END IF;
END //

-- Unit price from the product; quantity beyond stock rejected.
CREATE OR REPLACE TRIGGER OrderLine_before_insert BEFORE INSERT ON OrderLine FOR EACH ROW
trg: BEGIN
    DECLARE v_price DECIMAL(10,2) DEFAULT NULL;
    DECLARE v_stock INT DEFAULT NULL;
    DECLARE v_message VARCHAR(512);
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    IF NEW.quantity IS NULL OR NEW.quantity <= 0 THEN
        SET v_message = CONCAT('order line quantity must be greater than 0 (order ',
                               IFNULL(NEW.order_id, 'NULL'), ', product ',
                               IFNULL(NEW.product_id, 'NULL'), ')');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    SELECT current_price, quantity_on_hand INTO v_price, v_stock
    FROM Product WHERE product_id = NEW.product_id FOR UPDATE;
    IF v_price IS NULL THEN
        SET v_message = CONCAT('unknown product ', IFNULL(NEW.product_id, 'NULL'),
                               ' in order ', IFNULL(NEW.order_id, 'NULL'));
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    IF NEW.quantity > v_stock THEN
        SET v_message = CONCAT('insufficient stock for product ', NEW.product_id, ': ',
                               v_stock, ' on hand, ', NEW.quantity, ' ordered (order ',
                               IFNULL(NEW.order_id, 'NULL'), ')');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    SET NEW.unit_price = v_price;
END //

CREATE OR REPLACE TRIGGER OrderLine_after_insert AFTER INSERT ON OrderLine FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    UPDATE Product SET quantity_on_hand = quantity_on_hand - NEW.quantity
    WHERE product_id = NEW.product_id;
    CALL log_order_change(NEW.order_id, NEW.product_id);
END //

-- A changed quantity or product is checked against the stock; a new product brings its price.
CREATE OR REPLACE TRIGGER OrderLine_before_update BEFORE UPDATE ON OrderLine FOR EACH ROW
trg: BEGIN
    DECLARE v_price DECIMAL(10,2) DEFAULT NULL;
    DECLARE v_stock INT DEFAULT NULL;
    DECLARE v_needed INT;
    DECLARE v_message VARCHAR(512);
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    IF NEW.quantity IS NULL OR NEW.quantity <= 0 THEN
        SET v_message = CONCAT('order line quantity must be greater than 0 (order ',
                               IFNULL(NEW.order_id, 'NULL'), ', product ',
                               IFNULL(NEW.product_id, 'NULL'), ')');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    IF NEW.product_id <=> OLD.product_id AND NEW.quantity <= OLD.quantity THEN
        LEAVE trg;
    END IF;
    SELECT current_price, quantity_on_hand INTO v_price, v_stock
    FROM Product WHERE product_id = NEW.product_id FOR UPDATE;
    IF v_price IS NULL THEN
        SET v_message = CONCAT('unknown product ', IFNULL(NEW.product_id, 'NULL'),
                               ' in order ', NEW.order_id);
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    IF NEW.product_id <=> OLD.product_id THEN
        SET v_needed = NEW.quantity - OLD.quantity;
    ELSE
        SET v_needed = NEW.quantity;
        SET NEW.unit_price = v_price;
    END IF;
    IF v_needed > v_stock THEN
        SET v_message = CONCAT('insufficient stock for product ', NEW.product_id, ': ',
                               v_stock, ' on hand, ', v_needed, ' more ordered (order ',
                               NEW.order_id, ')');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
END //

CREATE OR REPLACE TRIGGER OrderLine_after_update AFTER UPDATE ON OrderLine FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    IF NOT (NEW.product_id <=> OLD.product_id AND NEW.quantity <=> OLD.quantity) THEN
        UPDATE Product SET quantity_on_hand = quantity_on_hand + OLD.quantity
        WHERE product_id = OLD.product_id;
        UPDATE Product SET quantity_on_hand = quantity_on_hand - NEW.quantity
        WHERE product_id = NEW.product_id;
    END IF;
    CALL log_order_change(OLD.order_id, OLD.product_id);
    IF NOT (NEW.order_id <=> OLD.order_id AND NEW.product_id <=> OLD.product_id) THEN
        CALL log_order_change(NEW.order_id, NEW.product_id);
    END IF;
END //

CREATE OR REPLACE TRIGGER OrderLine_after_delete AFTER DELETE ON OrderLine FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    UPDATE Product SET quantity_on_hand = quantity_on_hand + OLD.quantity
    WHERE product_id = OLD.product_id;
    CALL log_order_change(OLD.order_id, OLD.product_id);
END //

CREATE OR REPLACE TRIGGER Order_after_insert AFTER INSERT ON `Order` FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    CALL log_change(NEW.customer_id, NULL, DATE(NEW.date_placed));
END //

CREATE OR REPLACE TRIGGER Order_after_update AFTER UPDATE ON `Order` FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    IF NOT (NEW.customer_id <=> OLD.customer_id AND NEW.date_placed <=> OLD.date_placed
            AND NEW.order_id <=> OLD.order_id) THEN
        CALL log_change(OLD.customer_id, NULL, DATE(OLD.date_placed));
        IF NOT (NEW.customer_id <=> OLD.customer_id
                AND DATE(NEW.date_placed) <=> DATE(OLD.date_placed)) THEN
            CALL log_change(NEW.customer_id, NULL, DATE(NEW.date_placed));
        END IF;
    END IF;
END //

CREATE OR REPLACE TRIGGER Order_after_delete AFTER DELETE ON `Order` FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    CALL log_change(OLD.customer_id, NULL, DATE(OLD.date_placed));
END //

CREATE OR REPLACE TRIGGER Customer_after_insert AFTER INSERT ON Customer FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    CALL log_change(NEW.customer_id, NULL, NULL);
END //

CREATE OR REPLACE TRIGGER Customer_after_update AFTER UPDATE ON Customer FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    IF NOT (NEW.customer_id <=> OLD.customer_id AND NEW.first_name <=> OLD.first_name
            AND NEW.last_name <=> OLD.last_name AND NEW.email <=> OLD.email) THEN
        CALL log_change(OLD.customer_id, NULL, NULL);
        IF NEW.customer_id <> OLD.customer_id THEN
            CALL log_change(NEW.customer_id, NULL, NULL);
        END IF;
    END IF;
END //

CREATE OR REPLACE TRIGGER Customer_after_delete AFTER DELETE ON Customer FOR EACH ROW
trg: BEGIN
    IF @pos_bulk_load <=> 1 THEN
        LEAVE trg;
    END IF;
    CALL log_change(OLD.customer_id, NULL, NULL);
END //

DELIMITER ;
