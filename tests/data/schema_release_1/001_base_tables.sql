-- 001: the POS base tables.
--
-- Applied by roles/pos_schema in the `pos` database (the file names no database, so tests can
-- apply it to a throw-away one). Re-runnable: CREATE TABLE IF NOT EXISTS only. A change to an
-- existing table is a NEW numbered migration, never an edit of this file (its sha256 is recorded
-- in schema_version).
--
-- Naming convention (held everywhere): tables PascalCase singular as the course names them,
-- columns snake_case, `<table>_id` for surrogate keys, constraints and indexes named
-- <Table>_<column(s)>_<pk|fk|chk|idx|uq>. `Order` is a reserved word: always backtick-quoted.
-- InnoDB, utf8mb4 everywhere.

CREATE TABLE IF NOT EXISTS City (
    zip   CHAR(5)      NOT NULL COMMENT 'US ZIP code kept as text: leading zeros are significant',
    city  VARCHAR(100) NOT NULL,
    state CHAR(2)      NOT NULL,
    CONSTRAINT City_zip_pk PRIMARY KEY (zip),
    CONSTRAINT City_zip_chk CHECK (zip REGEXP '^[0-9]{5}$'),
    CONSTRAINT City_state_chk CHECK (CHAR_LENGTH(state) = 2)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS Customer (
    customer_id   INT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'kept from the CSV file',
    first_name    VARCHAR(100) NOT NULL,
    last_name     VARCHAR(100) NOT NULL,
    email         VARCHAR(255) NOT NULL,
    address_line1 VARCHAR(255) NOT NULL,
    address_line2 VARCHAR(255) NULL,
    phone         VARCHAR(30)  NULL,
    birthdate     DATE         NULL,
    zip           CHAR(5)      NOT NULL,
    CONSTRAINT Customer_customer_id_pk PRIMARY KEY (customer_id),
    KEY Customer_email_idx (email),
    KEY Customer_last_name_first_name_idx (last_name, first_name),
    KEY Customer_zip_fk_idx (zip),
    CONSTRAINT Customer_zip_fk FOREIGN KEY (zip) REFERENCES City (zip)
        ON UPDATE CASCADE ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS Product (
    product_id       INT UNSIGNED  NOT NULL AUTO_INCREMENT COMMENT 'kept from the CSV file',
    name             VARCHAR(255)  NOT NULL,
    current_price    DECIMAL(10,2) NOT NULL,
    quantity_on_hand INT           NOT NULL DEFAULT 0,
    CONSTRAINT Product_product_id_pk PRIMARY KEY (product_id),
    KEY Product_name_idx (name),
    CONSTRAINT Product_current_price_chk CHECK (current_price >= 0),
    CONSTRAINT Product_quantity_on_hand_chk CHECK (quantity_on_hand >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS `Order` (
    order_id     INT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'kept from the CSV file',
    customer_id  INT UNSIGNED NOT NULL,
    date_placed  DATETIME     NOT NULL,
    date_shipped DATETIME     NULL COMMENT 'NULL: not shipped (yet) or cancelled',
    CONSTRAINT Order_order_id_pk PRIMARY KEY (order_id),
    KEY Order_customer_id_fk_idx (customer_id, date_placed),
    KEY Order_date_placed_idx (date_placed),
    CONSTRAINT Order_customer_id_fk FOREIGN KEY (customer_id) REFERENCES Customer (customer_id)
        ON UPDATE CASCADE ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS OrderLine (
    order_id   INT UNSIGNED  NOT NULL,
    product_id INT UNSIGNED  NOT NULL,
    quantity   INT           NOT NULL,
    unit_price DECIMAL(10,2) NOT NULL COMMENT 'price when ordered; filled by a trigger',
    CONSTRAINT OrderLine_order_id_product_id_pk PRIMARY KEY (order_id, product_id),
    KEY OrderLine_product_id_fk_idx (product_id),
    CONSTRAINT OrderLine_order_id_fk FOREIGN KEY (order_id) REFERENCES `Order` (order_id)
        ON UPDATE CASCADE ON DELETE RESTRICT,
    CONSTRAINT OrderLine_product_id_fk FOREIGN KEY (product_id) REFERENCES Product (product_id)
        ON UPDATE CASCADE ON DELETE RESTRICT,
    CONSTRAINT OrderLine_quantity_chk CHECK (quantity > 0),
    CONSTRAINT OrderLine_unit_price_chk CHECK (unit_price >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS PriceHistory (
    price_history_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    product_id       INT UNSIGNED    NOT NULL,
    old_price        DECIMAL(10,2)   NULL,
    new_price        DECIMAL(10,2)   NULL,
    changed_at       DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    CONSTRAINT PriceHistory_price_history_id_pk PRIMARY KEY (price_history_id),
    KEY PriceHistory_product_id_changed_at_fk_idx (product_id, changed_at),
    CONSTRAINT PriceHistory_product_id_fk FOREIGN KEY (product_id) REFERENCES Product (product_id)
        ON UPDATE CASCADE ON DELETE RESTRICT,
    CONSTRAINT PriceHistory_old_price_chk CHECK (old_price IS NULL OR old_price >= 0),
    CONSTRAINT PriceHistory_new_price_chk CHECK (new_price IS NULL OR new_price >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
