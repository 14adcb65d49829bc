# Source: https://docs.prefect.io/v3/advanced/transactions (https://github.com/PrefectHQ/prefect/blob/ce79dd3d6cfa2b7337265498210dbc4d25bcdc98/docs/v3/advanced/transactions.mdx, "Write your first transaction", Prefect 3)
# Adapted: sleep(2) ("to give you a chance to see the file") is sleep(0); a finally prints whether
# side-effect.txt is left after the flow, which the page says it is not.
# Expect exit: 1
# Expect stdout:
#   side-effect.txt left: False
# Expect output:
#   Running rollback hook 'del_file'
#   Rollback hook 'del_file' finished running successfully
#   ValueError: Not enough data!

import os
from time import sleep

from prefect import task, flow
from prefect.transactions import transaction


@task
def write_file(contents: str):
    "Writes to a file."
    with open("side-effect.txt", "w") as f:
        f.write(contents)


@write_file.on_rollback
def del_file(transaction):
    "Deletes file."
    os.unlink("side-effect.txt")


@task
def quality_test():
    "Checks contents of file."
    with open("side-effect.txt", "r") as f:
        data = f.readlines()

    if len(data) < 2:
        raise ValueError("Not enough data!")


@flow
def pipeline(contents: str):
    with transaction():
        write_file(contents)
        sleep(0) # sleeping to give you a chance to see the file
        quality_test()


if __name__ == "__main__":
    try:
        pipeline(contents="hello world")
    finally:
        print("side-effect.txt left:", os.path.exists("side-effect.txt"))
