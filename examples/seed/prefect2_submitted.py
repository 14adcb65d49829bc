# The question the seed asks: the Prefect 2.0 example with *submitted* tasks.
# In Prefect the `with` block closes the connection while the tasks still run.
# With tether, one line makes it correct: `mysql = resource(get_mysql_conn)`.
# The connection stays open until both tasks are done, then closes. One MySQL
# connection is one session (its driver declares DB-API threadsafety 1), so the
# tasks take turns on it; to read in parallel, share a pooled engine instead
# (tether.sql.sql_engine).
import os
import contextlib
import pandas as pd
from tether import flow, task, resource

@contextlib.contextmanager
def get_mysql_conn(db):
    import mysql.connector

    conn = mysql.connector.connect(
        host=os.environ.get("MYSQL_HOST"),
        user=os.environ.get("MYSQL_USER"),
        password=os.environ.get("MYSQL_PWD"),
        database=db,
    )
    try:
        yield conn
    finally:
        conn.close()

mysql = resource(get_mysql_conn)

@task
def extract_sales_from_db(conn) -> pd.DataFrame:
    return pd.read_sql("SELECT * FROM sales", conn)

@task
def extract_customers_from_db(conn) -> pd.DataFrame:
    return pd.read_sql("SELECT * FROM customers", conn)

@task
def merge_data(sales: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    return sales.merge(customers, on="CUSTOMER_ID", how="left")

@task
def load_to_snowflake_dwh(data: pd.DataFrame):
    return len(data)

@flow
def main_flow():
    with mysql(db=os.environ.get("MYSQL_DB", "mytestdb")) as conn:
        sales = extract_sales_from_db.submit(conn)
        customers = extract_customers_from_db.submit(conn)
    df = merge_data.submit(sales, customers)
    return load_to_snowflake_dwh.submit(df)

if __name__ == "__main__":
    print(f"loaded {main_flow()} rows")
