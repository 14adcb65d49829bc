# Source: https://docs.prefect.io/v3/examples/hello-world (PrefectHQ/prefect examples/hello_world.py)
# Adapted: the page's narrative comments are shortened; the code is as it is.
# Expect exit: 0
# Expect output:
#   Hello, Marvin!
#   Hello, Marvin!
#   Hello, Zaphod!
#   Hello, Trillian!
#   Hello, Ford!
# Expect count: 2 Hello, Marvin!

from prefect import flow, tags


@flow(log_prints=True)
def hello(name: str = "Marvin") -> None:
    """Log a friendly greeting."""
    print(f"Hello, {name}!")


if __name__ == "__main__":
    # run the flow with default parameters
    with tags(
        "test"
    ):  # This is a tag that we can use to filter the flow runs in the UI
        hello()  # Logs: "Hello, Marvin!"

        # run the flow with a different input
        hello("Marvin")  # Logs: "Hello, Marvin!"

        # run the flow multiple times for different people
        crew = ["Zaphod", "Trillian", "Ford"]

        for name in crew:
            hello(name)
