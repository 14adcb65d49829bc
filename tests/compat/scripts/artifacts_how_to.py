# Source: https://docs.prefect.io/v3/how-to-guides/workflows/artifacts (PrefectHQ/prefect docs/v3/how-to-guides/workflows/artifacts.mdx: link, progress, markdown, table and image artifacts, and "Reading artifacts")
# Adapted: the page's examples run in one script; fetch_batch sleeps 0.01 s, not 2 s; the progress artifact has key="batches" so that it can be read back; the markdown report is shortened; the page's Artifact.get reads back what each example made, and the script prints it.
# Expect exit: 0
# Expect stdout:
#   irregular-data: [https://nyc3.digitaloceanspaces.com/my-bucket-name/low_pred_data.csv](https://nyc3.digitaloceanspaces.com/my-bucket-name/low_pred_data.csv) (# Low prediction accuracy)
#   my-important-link: [Prefect](https://www.prefect.io/)
#   batches: 100.0
#   gtm-report: Quarterly Sales Report
#   personalized-reachout: [{"customer_id": "12345", "name": "John Smith", "churn_probability": 0.85}, {"customer_id": "56789", "name": "Jane Jones", "churn_probability": 0.65}]
#   Image URL: https://media3.giphy.com/media/3KC2jD2QcBOSc/giphy.gif

from time import sleep

from prefect import flow, task
from prefect.artifacts import (
    Artifact,
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)


@task
def my_first_task():
    create_link_artifact(
        key="irregular-data",
        link="https://nyc3.digitaloceanspaces.com/my-bucket-name/highly_variable_data.csv",
        description="## Highly variable data",
    )


@task
def my_second_task():
    create_link_artifact(
        key="irregular-data",
        link="https://nyc3.digitaloceanspaces.com/my-bucket-name/low_pred_data.csv",
        description="# Low prediction accuracy",
    )


@flow
def my_flow():
    my_first_task()
    my_second_task()
    create_link_artifact(
        key="my-important-link",
        link="https://www.prefect.io/",
        link_text="Prefect",
    )


def fetch_batch(i: int):
    # Simulate fetching a batch of data
    sleep(0.01)


@task
def fetch_in_batches():
    progress_artifact_id = create_progress_artifact(
        progress=0.0,
        key="batches",
        description="Indicates the progress of fetching data in batches.",
    )
    for i in range(1, 11):
        fetch_batch(i)
        update_progress_artifact(artifact_id=progress_artifact_id, progress=i * 10)


@flow
def etl():
    fetch_in_batches()


@task
def markdown_task():
    na_revenue = 500000
    markdown_report = f"""# Sales Report

## Sales by Region

| Region        | Revenue |
|:--------------|-------:|
| North America | ${na_revenue:,} |
| Europe        | $250,000 |
"""
    create_markdown_artifact(
        key="gtm-report",
        markdown=markdown_report,
        description="Quarterly Sales Report",
    )


@flow()
def report_flow():
    markdown_task()


def my_fn():
    highest_churn_possibility = [
       {'customer_id':'12345', 'name': 'John Smith', 'churn_probability': 0.85 },
       {'customer_id':'56789', 'name': 'Jane Jones', 'churn_probability': 0.65 }
    ]

    create_table_artifact(
        key="personalized-reachout",
        table=highest_churn_possibility,
        description= "# Marvin, please reach out to these customers today!"
    )


@task
def create_image():
    # Do something to create an image and upload to a url
    image_url = "https://media3.giphy.com/media/3KC2jD2QcBOSc/giphy.gif"
    create_image_artifact(image_url=image_url, description="A gif.", key="gif")
    return image_url


@flow
def image_flow():
    return create_image()


if __name__ == "__main__":
    my_flow()
    etl()
    report_flow()
    my_fn()
    image_url = image_flow()
    links = Artifact.get("irregular-data")
    print(f"irregular-data: {links.data} ({links.description})")
    print(f"my-important-link: {Artifact.get('my-important-link').data}")
    print(f"batches: {Artifact.get('batches').data}")
    print(f"gtm-report: {Artifact.get('gtm-report').description}")
    print(f"personalized-reachout: {Artifact.get('personalized-reachout').data}")
    print(f"Image URL: {image_url}")
