-- Milestone 4, example 5: PREPARE / EXECUTE ... USING: values travel as parameters, never as SQL
-- text, so a hostile string is stored literally.
-- Run: mariadb pos < files/sql/examples/tx_05_prepared_statements.sql
-- Expected final state: product 9001 has 7 in stock; product 9002 is named with the literal
-- string '; DROP TABLE Customer; -- (and Customer still exists).
SET NAMES utf8mb4;
-- Set-up (re-runnable): demo product 9001, price 10.00, 5 in stock; no history.
DELETE FROM PriceHistory WHERE product_id IN (9001, 9002);
DELETE FROM Product WHERE product_id IN (9001, 9002);
INSERT INTO Product (product_id, name, current_price, quantity_on_hand)
VALUES (9001, 'Demo product', 10.00, 5);

PREPARE set_stock FROM 'UPDATE Product SET quantity_on_hand = ? WHERE product_id = ?';
SET @quantity = 7, @product_id = 9001;
EXECUTE set_stock USING @quantity, @product_id;
DEALLOCATE PREPARE set_stock;

PREPARE add_product FROM
    'INSERT INTO Product (product_id, name, current_price, quantity_on_hand) VALUES (?, ?, ?, ?)';
SET @name = '''; DROP TABLE Customer; --';
EXECUTE add_product USING 9002, @name, 3.50, 1;
DEALLOCATE PREPARE add_product;

PREPARE find_product FROM 'SELECT product_id, name FROM Product WHERE name = ?';
EXECUTE find_product USING @name;
DEALLOCATE PREPARE find_product;
SELECT COUNT(*) AS customer_table_still_there FROM Customer;
