-- Milestone 4, example 2: ROLLBACK undoes every change of the transaction, trigger effects too.
-- Run: mariadb pos < files/sql/examples/tx_02_rollback.sql
-- Expected final state: product 9001 unchanged (10.00, 5 in stock), no PriceHistory row.
SET NAMES utf8mb4;
-- Set-up (re-runnable): demo product 9001, price 10.00, 5 in stock; no history.
DELETE FROM PriceHistory WHERE product_id IN (9001, 9002);
DELETE FROM Product WHERE product_id IN (9001, 9002);
INSERT INTO Product (product_id, name, current_price, quantity_on_hand)
VALUES (9001, 'Demo product', 10.00, 5);

START TRANSACTION;
UPDATE Product SET quantity_on_hand = 0 WHERE product_id = 9001;
UPDATE Product SET current_price = 99.00 WHERE product_id = 9001;  -- the trigger logs it...
SELECT COUNT(*) AS history_inside_transaction FROM PriceHistory WHERE product_id = 9001;
ROLLBACK;                                                           -- ...and it is undone

SELECT product_id, current_price, quantity_on_hand FROM Product WHERE product_id = 9001;
SELECT COUNT(*) AS history_after_rollback FROM PriceHistory WHERE product_id = 9001;
