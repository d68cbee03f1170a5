-- Milestone 4, example 1: COMMIT makes a transaction's changes permanent.
-- Run: mariadb pos < files/sql/examples/tx_01_commit.sql
-- Expected final state: product 9001 has 15 in stock and costs 12.50; one PriceHistory row.
SET NAMES utf8mb4;
-- Set-up (re-runnable): demo product 9001, price 10.00, 5 in stock; no history.
DELETE FROM PriceHistory WHERE product_id IN (9001, 9002);
DELETE FROM Product WHERE product_id IN (9001, 9002);
INSERT INTO Product (product_id, name, current_price, quantity_on_hand)
VALUES (9001, 'Demo product', 10.00, 5);

START TRANSACTION;
UPDATE Product SET quantity_on_hand = quantity_on_hand + 10 WHERE product_id = 9001;
UPDATE Product SET current_price = 12.50 WHERE product_id = 9001;
COMMIT;

SELECT product_id, current_price, quantity_on_hand FROM Product WHERE product_id = 9001;
