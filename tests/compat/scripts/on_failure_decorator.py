# Source: https://docs.prefect.io/v3/how-to-guides/workflows/state-change-hooks (PrefectHQ/prefect docs/v3/how-to-guides/workflows/state-change-hooks.mdx, "send a notification when a workflow run fails")
# Adapted: the Slack webhook block and the API URL setting are replaced by a local stand-in
# that prints the notification; the flow is called at the end (it retries once, then fails).
# Expect exit: 1
# Expect count: 1 Your job failing_flow entered Failed
# Expect output:
#   ValueError: oops!
#   Tags: []

from prefect import flow


class Block:  # local stand-in for the Slack webhook block
    @staticmethod
    def load(name):
        return Block()

    def notify(self, body):
        print(body)


PREFECT_API_URL = "127.0.0.1:4200/api"


@flow(retries=1)
def failing_flow():
    raise ValueError("oops!")


@failing_flow.on_failure
def notify_slack(flow, flow_run, state):
    slack_webhook_block = Block.load(
        "slack-webhook/my-slack-webhook"
    )

    slack_webhook_block.notify(
        (
            f"Your job {flow_run.name} entered {state.name} "
            f"with message:\n\n"
            f"See <https://{PREFECT_API_URL}/flow-runs/"
            f"flow-run/{flow_run.id}|the flow run in the UI>\n\n"
            f"Tags: {flow_run.tags}\n\n"
            f"Scheduled start: {flow_run.expected_start_time}"
        )
    )


if __name__ == "__main__":
    failing_flow()
