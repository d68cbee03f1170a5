-- The POS triggers: the current definition of every trigger (re-applied whenever this file
-- changes, after the routines they call).
--
-- Created by root over the unix socket (DEFINER root@localhost, who has SUPER), so the server
-- keeps log_bin_trust_function_creators=OFF: see docs/schema.md. CREATE OR REPLACE: never a
-- window in which a table has no trigger.
-- Every data trigger does nothing while the session variable @pos_bulk_load = 1: the ETL fills
-- OrderLine.unit_price itself, keeps the CSV's stock, and writes the PriceHistory and ChangeLog
-- rows these triggers would have written (module_utils/mariadb_pos/etl.py, MV_CHANGE_QUERIES).
-- The order and order-line triggers log the signed CONTRIBUTION of each change to the ChangeLog
-- (delta = 1: lines, orders, quantity, amount, the order date added or removed); the others log
-- the KEYS whose rows must be recomputed (delta = 0). See docs/schema.md.

-- String literals, views and routines take the connection's character set: pin it.
SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci;

DELIMITER //

-- --- Product ---------------------------------------------------------------------------------

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

-- --- OrderLine: stock and price, then the ChangeLog ------------------------------------------

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
    CALL log_line_delta(1, NEW.order_id, NEW.product_id, NEW.quantity, NEW.unit_price);
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

-- --- Order -----------------------------------------------------------------------------------

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

-- --- Customer --------------------------------------------------------------------------------

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
