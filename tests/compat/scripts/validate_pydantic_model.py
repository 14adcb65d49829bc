# Source: https://docs.prefect.io/v3/how-to-guides/workflows/pass-inputs (PrefectHQ/prefect docs/v3/how-to-guides/workflows/pass-inputs.mdx, "pydantic models")
# Adapted: nothing; the page shows the validation error for model.a.
# Expect exit: 1
# Expect output:
#   model.a
#   Input should be a valid integer

from prefect import flow
from pydantic import BaseModel


class Model(BaseModel):
    a: int
    b: str


@flow
def flow_that_validates_parameters(model: Model): ...

flow_that_validates_parameters(
    model={"a": "WRONG", "b": "fine"}
)
