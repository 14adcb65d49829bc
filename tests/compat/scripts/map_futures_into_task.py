# Source: https://docs-2.prefect.io/latest/concepts/tasks/ (https://github.com/PrefectHQ/prefect/blob/8d5ba454aadfca9dee4aa81b9e3465f64c38dcac/docs/concepts/tasks.md, "map", Prefect 2)
# Adapted: nothing. The mapped futures passed to print_nums are resolved to their values.
# Expect exit: 0
# Expect stdout:
#   1
#   2
#   3
#   5
#   8
#   13
#   1
#   4
#   9
#   25
#   64
#   169

from prefect import flow, task

@task
def print_nums(nums):
    for n in nums:
        print(n)

@task
def square_num(num):
    return num**2

@flow
def map_flow(nums):
    print_nums(nums)
    squared_nums = square_num.map(nums) 
    print_nums(squared_nums)

map_flow([1,2,3,5,8,13])
