-- Milestone 4, example 4: DDL inside a transaction commits it implicitly; the later ROLLBACK has
-- nothing left to undo. (CREATE TEMPORARY TABLE would not commit; CREATE TABLE does.)
-- Run: mariadb pos < files/sql/examples/tx_04_implicit_commit.sql
-- Expected final state: product 9001 has 42 in stock despite the ROLLBACK; the demo table is gone.
SET NAMES utf8mb4;
-- Set-up (re-runnable): demo product 9001, price 10.00, 5 in stock; no history.
DELETE FROM PriceHistory WHERE product_id IN (9001, 9002);
DELETE FROM Product WHERE product_id IN (9001, 9002);
INSERT INTO Product (product_id, name, current_price, quantity_on_hand)
VALUES (9001, 'Demo product', 10.00, 5);

DROP TABLE IF EXISTS ImplicitCommitDemo;

START TRANSACTION;
UPDATE Product SET quantity_on_hand = 42 WHERE product_id = 9001;
CREATE TABLE ImplicitCommitDemo (demo_id INT PRIMARY KEY) ENGINE=InnoDB;  -- implicit COMMIT
ROLLBACK;                                                                -- too late

SELECT product_id, quantity_on_hand FROM Product WHERE product_id = 9001;
DROP TABLE ImplicitCommitDemo;
