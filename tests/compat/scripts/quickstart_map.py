# Source: https://docs.prefect.io/v3/get-started/quickstart (PrefectHQ/prefect docs/v3/get-started/quickstart.mdx, 01_getting_started.py)
# Adapted: the flow's result is printed (a list of ten, from the futures map returns).
# Expect exit: 0
# Expect stdout:
#   10 True

from prefect import flow, task
import random

@task
def get_customer_ids() -> list[str]:
    # Fetch customer IDs from a database or API
    return [f"customer{n}" for n in random.choices(range(100), k=10)]

@task
def process_customer(customer_id: str) -> str:
    # Process a single customer
    return f"Processed {customer_id}"

@flow
def main() -> list[str]:
    customer_ids = get_customer_ids()
    # Map the process_customer task across all customer IDs
    results = process_customer.map(customer_ids)
    return results


if __name__ == "__main__":
    results = main()
    print(len(results), all(r.startswith("Processed customer") for r in results))
