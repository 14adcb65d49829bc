# Source: https://docs-3.prefect.io/3.0/develop/transactions (https://github.com/PrefectHQ/prefect/blob/373a464afed4a8ab4143b4d98ca990e424ad0531/docs/3.0/develop/transactions.mdx, "Access data within transactions", get_transaction() in a hook and in a task, Prefect 3.0)
# Adapted: sleep(2) is sleep(0); the f-string's inner quotes are single quotes (the page's nested
# double quotes need Python 3.12).
# Expect exit: 1
# Expect stdout:
#   hello world
# Expect output:
#   ValueError: Not enough data! hello world

import os
from time import sleep

from prefect import task, flow
from prefect.transactions import get_transaction, transaction


@task
def write_file(contents: str):
    "Writes to a file."
    with open("side-effect.txt", "w") as f:
        f.write(contents)


@write_file.on_rollback
def del_file(transaction):
    "Deletes file."
    os.unlink("side-effect.txt")
    txn1 = get_transaction()      # get the transaction object
    print(txn1.get("contents"))   # prints "hello world"


@task
def quality_test():
    "Checks contents of file."
    with open("side-effect.txt", "r") as f:
        data = f.readlines()

    if len(data) < 2:
        txn2 = get_transaction()      # get the transaction object
        raise ValueError(f"Not enough data! {(txn2.get('contents'))}") 
        # prints "hello world" as part of the error message


@flow
def pipeline(contents: str):
    with transaction() as txn:
        write_file(contents)
        sleep(0)
        txn.set("contents", contents)  # set the contents key to the value of the contents variable
        quality_test()


if __name__ == "__main__":
    pipeline(contents="hello world")
