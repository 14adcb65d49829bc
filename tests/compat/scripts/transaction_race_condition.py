# Source: https://docs.prefect.io/v3/advanced/transactions (https://github.com/PrefectHQ/prefect/blob/ce79dd3d6cfa2b7337265498210dbc4d25bcdc98/docs/v3/advanced/transactions.mdx, "Handling race conditions", Prefect 3)
# Adapted: "import uuid", which the page's script uses but does not import; a last line prints
# whether race-condition.txt names a winning thread (which one wins differs from run to run).
# Expect exit: 0
# Expect output:
#   winner written: True

import threading
import uuid

from prefect import flow, task
from prefect.transactions import transaction


@task
def download_data():
    return f"{threading.current_thread().name} is the winner!"


@task
def write_file(contents: str):
    "Writes to a file."
    with open("race-condition.txt", "w") as f:
        f.write(contents)


@flow
def pipeline(transaction_key: str):
    with transaction(key=transaction_key) as txn:
        if txn.is_committed():
            print("Data file has already been written. Exiting early.")
            return
        data = download_data()
        write_file(data)


if __name__ == "__main__":
    # Run the pipeline twice to see the race condition
    transaction_key = f"race-condition-{uuid.uuid4()}"
    thread_1 = threading.Thread(target=pipeline, name="Thread 1", args=(transaction_key,))
    thread_2 = threading.Thread(target=pipeline, name="Thread 2", args=(transaction_key,))

    thread_1.start()
    thread_2.start()

    thread_1.join()
    thread_2.join()
    with open("race-condition.txt") as f:
        print("winner written:", f.read() in ("Thread 1 is the winner!", "Thread 2 is the winner!"))
