# Source: https://docs.prefect.io/v3/advanced/transactions (https://github.com/PrefectHQ/prefect/blob/ce79dd3d6cfa2b7337265498210dbc4d25bcdc98/docs/v3/advanced/transactions.mdx, "Idempotency", Prefect 3)
# Adapted: pipeline() runs twice in the script, standing for the page's "subsequent runs".
# Expect exit: 0
# Expect output:
#   Data file has already been written. Exiting early.
# Expect count: 1 Data file has already been written. Exiting early.

from prefect import task, flow
from prefect.transactions import transaction


@task
def download_data():
    """Imagine this downloads some data from an API"""
    return "some data"


@task
def write_data(data: str):
    """This writes the data to a file"""
    with open("data.txt", "w") as f:
        f.write(data)


@flow(log_prints=True)
def pipeline():
    with transaction(key="download-and-write-data") as txn:
        if txn.is_committed():
            print("Data file has already been written. Exiting early.")
            return
        data = download_data()
        write_data(data)


if __name__ == "__main__":
    pipeline()
    pipeline()
