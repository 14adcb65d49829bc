# Source: https://docs.prefect.io/v3/how-to-guides/workflows/pass-inputs (PrefectHQ/prefect docs/v3/how-to-guides/workflows/pass-inputs.mdx, "type hints coerce inputs")
# Adapted: the page's model example called with a dict, as a deployment would pass it, and
# the values printed with their types.
# Expect exit: 0
# Expect stdout:
#   a=1 <class 'int'>, b=fine, model is Model: True

from prefect import flow
from pydantic import BaseModel


class Model(BaseModel):
    a: int
    b: str


@flow
def flow_that_validates_parameters(model: Model):
    print(f"a={model.a} {type(model.a)}, b={model.b}, model is Model: {isinstance(model, Model)}")

flow_that_validates_parameters(model={"a": "1", "b": "fine"})
