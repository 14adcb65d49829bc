# Source: https://docs.prefect.io/v3/advanced/transactions (https://github.com/PrefectHQ/prefect/blob/ce79dd3d6cfa2b7337265498210dbc4d25bcdc98/docs/v3/advanced/transactions.mdx, "Write your first transaction" and its on_commit continuation, Prefect 3)
# Adapted: the continuation's on_commit hook added to the first example, sleep(2) is sleep(0), and
# the contents have two lines, so the quality test passes and the transaction commits.
# Expect exit: 0
# Expect stdout:
#   committing a record now using the task's cache key!
# Expect output:
#   Running commit hook 'confirmation'
# Expect count: 0 Running rollback hook

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


@write_file.on_commit
def confirmation(transaction):
    print("committing a record now using the task's cache key!")


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
    pipeline(contents="hello\nworld")
