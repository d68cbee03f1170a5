-- Milestone 4, example 3: ROLLBACK TO SAVEPOINT undoes only the work done after the savepoint.
-- Run: mariadb pos < files/sql/examples/tx_03_savepoint.sql
-- Expected final state: product 9001 costs 11.00 with 5 in stock; exactly one PriceHistory row
-- (10.00 -> 11.00): the 11.00 -> 1.00 change and its history row were rolled back.
SET NAMES utf8mb4;
-- Set-up (re-runnable): demo product 9001, price 10.00, 5 in stock; no history.
DELETE FROM PriceHistory WHERE product_id IN (9001, 9002);
DELETE FROM Product WHERE product_id IN (9001, 9002);
INSERT INTO Product (product_id, name, current_price, quantity_on_hand)
VALUES (9001, 'Demo product', 10.00, 5);

START TRANSACTION;
UPDATE Product SET current_price = 11.00 WHERE product_id = 9001;
SAVEPOINT before_discount;
UPDATE Product SET current_price = 1.00, quantity_on_hand = 0 WHERE product_id = 9001;
ROLLBACK TO SAVEPOINT before_discount;
COMMIT;

SELECT product_id, current_price, quantity_on_hand FROM Product WHERE product_id = 9001;
SELECT old_price, new_price FROM PriceHistory WHERE product_id = 9001;
