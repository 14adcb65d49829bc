# The seed's Prefect 1.0 example, unchanged but for the import lines (prefect -> tether)
# and the database name, which it reads from MYSQL_DB (default: the seed's DB_NAME).
import os
import mysql.connector
import pandas as pd
from tether import Flow, task
from tether import resource_manager

@resource_manager
class MySQLConnection:
    def __init__(self, database: str = os.environ.get("MYSQL_DB", "DB_NAME")):
        self.database = database

    def setup(self):
        return mysql.connector.connect(
            host=os.environ.get("MYSQL_HOST"),
            user=os.environ.get("MYSQL_USER"),
            password=os.environ.get("MYSQL_PWD"),
            database=self.database,
        )

    @staticmethod
    def cleanup(conn):
        conn.close()

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
    pass

with Flow("resource_manager_example") as flow:
    with MySQLConnection() as conn:
        sales = extract_sales_from_db(conn)
        customers = extract_customers_from_db(conn)
    df = merge_data(sales, customers)
    load_to_snowflake_dwh(df)

if __name__ == "__main__":
    state = flow.run()
    raise SystemExit(0 if state.is_successful() else 1)
