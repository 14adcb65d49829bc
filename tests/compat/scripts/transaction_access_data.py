# Source: https://docs.prefect.io/v3/advanced/transactions (https://github.com/PrefectHQ/prefect/blob/ce79dd3d6cfa2b7337265498210dbc4d25bcdc98/docs/v3/advanced/transactions.mdx, "Access data within transactions", Prefect 3)
# Adapted: sleep(2) is sleep(0); a finally prints whether side-effect.txt is left after the flow
# (the on_rollback hook deletes it by the name it reads from the transaction).
# Expect exit: 1
# Expect stdout:
#   side-effect.txt left: False
# Expect output:
#   Running rollback hook 'del_file'
#   ValueError: Not enough data!

import os
from time import sleep

from prefect import task, flow
from prefect.transactions import transaction


@task
def write_file(filename: str, contents: str):
    "Writes to a file."
    with open(filename, "w") as f:
        f.write(contents)


@write_file.on_rollback
def del_file(txn):
    "Deletes file."
    os.unlink(txn.get("filename"))


@task
def quality_test(filename):
    "Checks contents of file."
    with open(filename, "r") as f:
        data = f.readlines()

    if len(data) < 2:
        raise ValueError(f"Not enough data!")


@flow
def pipeline(filename: str, contents: str):
    with transaction() as txn:
        txn.set("filename", filename)
        write_file(filename, contents)
        sleep(0)  # sleeping to give you a chance to see the file
        quality_test(filename)


if __name__ == "__main__":
    try:
        pipeline(
            filename="side-effect.txt",
            contents="hello world",
        )
    finally:
        print("side-effect.txt left:", os.path.exists("side-effect.txt"))
