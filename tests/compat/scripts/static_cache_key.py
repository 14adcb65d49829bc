# Source: https://docs-2.prefect.io/latest/concepts/tasks/ (https://github.com/PrefectHQ/prefect/blob/8d5ba454aadfca9dee4aa81b9e3465f64c38dcac/docs/concepts/tasks.md, "caching with a static key", Prefect 2)
# Adapted: the call of test_caching() at the end. The page: the expensive operation runs
# once, the next two calls are cached.
# Expect exit: 0
# Expect stdout:
#   running an expensive operation

from prefect import task, flow

def static_cache_key(context, parameters):
    # return a constant
    return "static cache key"

@task(cache_key_fn=static_cache_key)
def cached_task():
    print('running an expensive operation')
    return 42

@flow
def test_caching():
    cached_task()
    cached_task()
    cached_task()

test_caching()
