# Source: https://docs-v1.prefect.io/core/concepts/tasks.html#operators (PrefectHQ/prefect v1 docs/core/concepts/tasks.md, "Operators")
# Adapted: the docs' operators written out in one flow, with the results printed; Prefect 1 indexing and comparison as in its "Indexing" section.
# Expect exit: 0
# Expect stdout:
#   3 -1 True [2, 3] 2

from prefect import Flow, Parameter, task


@task
def make_list(a, b):
    return [a, b]


with Flow("Using Operators") as flow:
    a = Parameter("a")
    b = Parameter("b")
    add = a + b
    sub = a - b
    less = a < b
    pair = make_list(a + 1, b + 1)
    first = pair[0]

state = flow.run(a=1, b=2)
assert state.is_successful()
print(state.result[add].result, state.result[sub].result, state.result[less].result,
      state.result[pair].result, state.result[first].result)
