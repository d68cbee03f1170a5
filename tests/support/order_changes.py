"""Random changes to the orders of tests.support.schema.create_schema_with_orders, for the
property tests of the materialized-view refresh (tests/test_view_refresh*.py)."""

from __future__ import annotations

import datetime

from hypothesis import strategies as st

from tests.support.schema import ORDERS_START, rows

# One random change: (kind, a, b, c) interpreted against the current rows.
CHANGE = st.tuples(st.sampled_from(["order", "quantity", "delete_line", "move_order",
                                    "redate_order", "rename_product", "rename_customer",
                                    "delete_order", "new_customer", "add_line"]),
                   st.integers(0, 10 ** 6), st.integers(0, 10 ** 6), st.integers(1, 5))


def apply_change(conn, change):
    kind, a, b, c = change
    with conn.cursor() as cur:
        orders = [r[0] for r in rows(conn, "SELECT order_id FROM `Order` ORDER BY order_id")]
        customers = [r[0] for r in rows(conn, "SELECT customer_id FROM Customer "
                                              "ORDER BY customer_id")]
        lines = rows(conn, "SELECT order_id, product_id FROM OrderLine ORDER BY 1, 2")
        if kind == "order":
            cur.execute("CALL place_order(%s, %s, @o)", (
                customers[a % len(customers)],
                '[{"product_id": %d, "quantity": %d}]' % (1 + b % 6, c)))
        elif kind == "add_line" and orders:
            order_id, product_id = orders[a % len(orders)], 1 + b % 6
            if (order_id, product_id) not in lines:
                cur.execute("INSERT INTO OrderLine (order_id, product_id, quantity) "
                            "VALUES (%s, %s, %s)", (order_id, product_id, c))
        elif kind == "quantity" and lines:
            cur.execute("UPDATE OrderLine SET quantity = %s WHERE order_id = %s "
                        "AND product_id = %s", (c, *lines[a % len(lines)]))
        elif kind == "delete_line" and lines:
            cur.execute("DELETE FROM OrderLine WHERE order_id = %s AND product_id = %s",
                        lines[a % len(lines)])
        elif kind == "move_order" and orders:
            cur.execute("UPDATE `Order` SET customer_id = %s WHERE order_id = %s",
                        (customers[b % len(customers)], orders[a % len(orders)]))
        elif kind == "redate_order" and orders:
            cur.execute("UPDATE `Order` SET date_placed = %s WHERE order_id = %s",
                        (ORDERS_START + datetime.timedelta(hours=b % 2000),
                         orders[a % len(orders)]))
        elif kind == "rename_product":
            cur.execute("UPDATE Product SET name = %s WHERE product_id = %s",
                        (f"Product {b % 4}", 1 + a % 6))
        elif kind == "rename_customer":
            cur.execute("UPDATE Customer SET first_name = %s, email = %s WHERE customer_id = %s",
                        (f"Name{b % 3}", f"e{b % 3}@example.com", customers[a % len(customers)]))
        elif kind == "delete_order" and orders:
            order_id = orders[a % len(orders)]
            cur.execute("DELETE FROM OrderLine WHERE order_id = %s", (order_id,))
            cur.execute("DELETE FROM `Order` WHERE order_id = %s", (order_id,))
        elif kind == "new_customer":
            cur.execute("INSERT INTO Customer (first_name, last_name, email, address_line1, zip) "
                        "VALUES (%s, 'New', %s, 'street', '02134')", (f"N{a}", f"n{a}@x.org"))
