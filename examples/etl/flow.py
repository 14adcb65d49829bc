"""The seed's ETL, made real: extract two tables inside one source-database
resource scope, merge them with pandas, load the result into a warehouse.

Defaults need no server: the source is a SQLite file filled with sample data,
the warehouse a DuckDB file, both under $TETHER_HOME (default ~/.tether).

    python examples/etl/flow.py
    python examples/etl/flow.py --source-url mysql+pymysql://root@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, create_engine, text

from tether import flow, get_run_logger, task
from tether.sql import sql_engine
from tether.store import active_store, flush


def tether_home() -> Path:
    home = Path(os.environ.get("TETHER_HOME", Path.home() / ".tether"))
    home.mkdir(parents=True, exist_ok=True)
    return home


@task
def create_sample_data(source_url: str, rows: int) -> int:
    """Fill the source with `rows` sales over rows//10 customers (replacing earlier ones)."""
    rng = random.Random(42)
    customers = max(1, rows // 10)
    engine = create_engine(source_url)
    try:
        pd.DataFrame(
            {"CUSTOMER_ID": range(1, customers + 1), "NAME": [f"customer {i}" for i in range(1, customers + 1)]}
        ).to_sql("customers", engine, if_exists="replace", index=False)
        pd.DataFrame(
            {
                "SALE_ID": range(1, rows + 1),
                "CUSTOMER_ID": [rng.randint(1, customers) for _ in range(rows)],
                "AMOUNT": [round(rng.uniform(1, 500), 2) for _ in range(rows)],
            }
        ).to_sql("sales", engine, if_exists="replace", index=False)
    finally:
        engine.dispose()
    return rows


@task
def extract_sales_from_db(source: Engine) -> pd.DataFrame:
    return pd.read_sql("SELECT * FROM sales", source)


@task
def extract_customers_from_db(source: Engine) -> pd.DataFrame:
    return pd.read_sql("SELECT * FROM customers", source)


@task
def merge_data(sales: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    return sales.merge(customers, on="CUSTOMER_ID", how="left")


@task
def load_to_warehouse(data: pd.DataFrame, warehouse_url: str, table: str = "sales_by_customer") -> int:
    engine = create_engine(warehouse_url)
    try:
        with engine.begin() as conn:  # replace the table in one transaction
            # Dropped here, not by to_sql(if_exists="replace"): pandas reflects the old table
            # first, and duckdb-engine's reflection fails on DuckDB 2 (no pg_catalog.pg_collation).
            conn.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
            data.to_sql(table, conn, index=False)
            return int(conn.execute(text(f'SELECT COUNT(*) FROM "{table}"')).scalar_one())
    finally:
        engine.dispose()


@flow
def etl(source_url: str | None = None, warehouse_url: str | None = None, rows: int = 1000) -> dict[str, int]:
    logger = get_run_logger()
    home = tether_home()
    if source_url is None:
        source_url = f"sqlite:///{home / 'etl_source.db'}"
        create_sample_data(source_url, rows)
    if warehouse_url is None:
        warehouse_url = f"duckdb:///{home / 'etl_warehouse.duckdb'}"
    with sql_engine(source_url) as source:
        sales = extract_sales_from_db.submit(source)
        customers = extract_customers_from_db.submit(source)
    merged = merge_data.submit(sales, customers)
    loaded = load_to_warehouse(merged, warehouse_url)
    counts = {"extracted_sales": len(sales.result()), "extracted_customers": len(customers.result()),
              "merged": len(merged.result()), "loaded": loaded}
    logger.info("Rows: %s", counts)
    logger.info("Warehouse: %s", warehouse_url)
    return counts


def report(counts: dict[str, int]) -> None:
    """What happened, from the run store: rows, each resource's life, where the run is."""
    print(f"\nRows: extracted {counts['extracted_sales']} sales and {counts['extracted_customers']} customers, "
          f"merged {counts['merged']}, loaded {counts['loaded']} into the warehouse.")
    store = active_store()
    if store is None:
        return
    flush()
    run = store.flow_runs(limit=1)[0]
    detail = store.flow_run(run.id)
    names = {t.id: t.name for t in detail.task_runs}
    print("Resources:")
    for entry in detail.resources:
        opened = datetime.fromtimestamp(entry.setup_at or entry.created).strftime("%H:%M:%S.%f")[:-3]
        closed = datetime.fromtimestamp(entry.cleaned_at).strftime("%H:%M:%S.%f")[:-3] if entry.cleaned_at else "-"
        users = ", ".join(names.get(u, u) for u in entry.used_by) or "no task"
        print(f"  {entry.name}: opened {opened}, used by {users}; closed {closed} "
              f"(scope {entry.scope_outcome or '?'}, cleanup {entry.cleanup_outcome or 'pending'})")
    print(f"Recorded as flow run {run.id} ({run.state_name}) in {store.location.url}.")
    cli = "tether" if shutil.which("tether") else str(Path(sys.executable).parent / "tether")
    print(f"See it again: {cli} runs show {run.id}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-url")
    parser.add_argument("--warehouse-url")
    parser.add_argument("--rows", type=int, default=1000)
    options = parser.parse_args()
    report(etl(options.source_url, options.warehouse_url, options.rows))
