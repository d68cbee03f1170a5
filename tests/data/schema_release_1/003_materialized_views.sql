-- 003: materialized views, emulated as tables (MariaDB has none).
--
-- Each <View>MV table holds the rows of the view <View>; it is refreshed by the Ansible module
-- mariadb_view_refresh or the procedure refresh_materialized_view (005):
--   full        builds <View>MV__shadow, fills it from the view and swaps it in with ONE atomic
--               RENAME TABLE, so a reader never sees a missing, empty or half-built table;
--   incremental recomputes only the keys listed in ChangeLog for that table (fed by the triggers
--               of 004) and deletes the ChangeLog rows it consumed.
-- MaterializedView is the registry: which table materializes which view, and the ChangeLog key
-- columns used for incremental refresh, in order of preference: for each ChangeLog row the first
-- listed key column that is not NULL names the rows to recompute.
-- Re-runnable: CREATE TABLE IF NOT EXISTS and INSERT IGNORE.

-- String literals, views and routines take the connection's character set: pin it.
SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS MaterializedView (
    mv_table          VARCHAR(64)  NOT NULL,
    source_view       VARCHAR(64)  NOT NULL,
    key_columns       VARCHAR(255) NOT NULL COMMENT 'comma-separated ChangeLog columns',
    last_refresh_mode VARCHAR(11)  NULL,
    last_refreshed_at DATETIME(6)  NULL,
    row_count         BIGINT UNSIGNED NULL,
    CONSTRAINT MaterializedView_mv_table_pk PRIMARY KEY (mv_table),
    CONSTRAINT MaterializedView_mv_table_chk CHECK (mv_table REGEXP '^[A-Za-z][A-Za-z0-9_]*$'),
    CONSTRAINT MaterializedView_source_view_chk
        CHECK (source_view REGEXP '^[A-Za-z][A-Za-z0-9_]*$'),
    CONSTRAINT MaterializedView_last_refresh_mode_chk
        CHECK (last_refresh_mode IS NULL OR last_refresh_mode IN ('full', 'incremental'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- One row per (materialized view, change): the keys whose rows may be stale.
CREATE TABLE IF NOT EXISTS ChangeLog (
    change_id   BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    mv_table    VARCHAR(64)     NOT NULL,
    customer_id INT UNSIGNED    NULL,
    product_id  INT UNSIGNED    NULL,
    sale_date   DATE            NULL,
    changed_at  DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    CONSTRAINT ChangeLog_change_id_pk PRIMARY KEY (change_id),
    KEY ChangeLog_mv_table_change_id_idx (mv_table, change_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS ProductBuyersMV (
    product_id       INT UNSIGNED   NOT NULL,
    product_name     VARCHAR(255)   NOT NULL,
    customer_id      INT UNSIGNED   NOT NULL,
    first_name       VARCHAR(100)   NOT NULL,
    last_name        VARCHAR(100)   NOT NULL,
    email            VARCHAR(255)   NOT NULL,
    order_count      BIGINT         NOT NULL,
    total_quantity   DECIMAL(32,0)  NOT NULL,
    total_spent      DECIMAL(42,2)  NOT NULL,
    first_ordered_at DATETIME       NOT NULL,
    last_ordered_at  DATETIME       NOT NULL,
    CONSTRAINT ProductBuyersMV_product_id_customer_id_pk PRIMARY KEY (product_id, customer_id),
    KEY ProductBuyersMV_customer_id_idx (customer_id),
    KEY ProductBuyersMV_product_name_idx (product_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS CustomerPurchasesMV (
    customer_id    INT UNSIGNED  NOT NULL,
    first_name     VARCHAR(100)  NOT NULL,
    last_name      VARCHAR(100)  NOT NULL,
    email          VARCHAR(255)  NOT NULL,
    order_count    BIGINT        NOT NULL,
    item_count     DECIMAL(32,0) NOT NULL,
    total_spent    DECIMAL(42,2) NOT NULL,
    first_order_at DATETIME      NULL,
    last_order_at  DATETIME      NULL,
    CONSTRAINT CustomerPurchasesMV_customer_id_pk PRIMARY KEY (customer_id),
    KEY CustomerPurchasesMV_email_idx (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS DailySalesMV (
    sale_date   DATE          NOT NULL,
    order_count BIGINT        NOT NULL,
    item_count  DECIMAL(32,0) NOT NULL,
    revenue     DECIMAL(42,2) NOT NULL,
    CONSTRAINT DailySalesMV_sale_date_pk PRIMARY KEY (sale_date)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- ProductBuyers: recompute a customer's rows after order changes (cheap: Order.customer_id
-- index), all rows of a product only after the product was renamed.
INSERT IGNORE INTO MaterializedView (mv_table, source_view, key_columns) VALUES
    ('ProductBuyersMV', 'ProductBuyers', 'customer_id,product_id'),
    ('CustomerPurchasesMV', 'CustomerPurchases', 'customer_id'),
    ('DailySalesMV', 'DailySales', 'sale_date');
