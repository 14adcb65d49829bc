# Source: https://docs.prefect.io/v3/how-to-guides/configuration/store-secrets (PrefectHQ/prefect docs/v3/how-to-guides/configuration/store-secrets.mdx, "Store secrets")
# Adapted: the page's three snippets (save, load in a flow, update with overwrite=True) run in one script, the flow once after each save; the block's repr is printed to show the value is hidden.
# Expect exit: 0
# Expect stdout:
#   Marvin's surprise birthday party is on the 15th
#   Marvin's surprise birthday party is actually on the 16th
#   Secret(value=Secret('**********'))

from prefect import flow
from prefect.blocks.system import Secret

secret = Secret(value="Marvin's surprise birthday party is on the 15th")
secret.save("surprise-party")


@flow
def my_flow():
    secret = Secret.load("surprise-party")
    print(secret.get())


if __name__ == "__main__":
    my_flow()
    secret = Secret(value="Marvin's surprise birthday party is actually on the 16th")
    secret.save("surprise-party", overwrite=True)
    my_flow()
    print(repr(Secret.load("surprise-party")))
