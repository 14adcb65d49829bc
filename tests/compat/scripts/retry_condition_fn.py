# Source: https://docs.prefect.io/v3/how-to-guides/workflows/retries (PrefectHQ/prefect docs/v3/how-to-guides/workflows/retries.mdx, "retry_condition_fn")
# Adapted: httpx is replaced by a local stand-in (no network): get(url) answers with the
# status code at the end of the URL. The workflow is run for a 404 (the handler says no
# retry) and a 503 (retried once, as retries=1 allows); each call is printed.
# Expect exit: 0
# Expect count: 1 calling https://httpbin.org/status/404
# Expect count: 2 calling https://httpbin.org/status/503
# Expect stdout:
#   calling https://httpbin.org/status/404
#   404 FAILED
#   calling https://httpbin.org/status/503
#   calling https://httpbin.org/status/503
#   503 FAILED


class httpx:  # local stand-in for the network
    class ConnectError(Exception):
        pass

    class HTTPStatusError(Exception):
        def __init__(self, response):
            super().__init__(f"status {response.status_code}")
            self.response = response

    class Response:
        def __init__(self, status_code):
            self.status_code = status_code

        def raise_for_status(self):
            if self.status_code >= 400:
                raise httpx.HTTPStatusError(self)

        def json(self):
            return {}

    @staticmethod
    def get(url):
        print("calling", url)
        return httpx.Response(int(url.rsplit("/", 1)[1]))


from prefect import flow, task


def retry_handler(task, task_run, state) -> bool:
    """
    Retry handler that skips retries if the HTTP status code is 401 or 404.
    """
    try:
        state.result()
    except httpx.HTTPStatusError as exc:
        do_not_retry_on_these_codes = [401, 404]
        return exc.response.status_code not in do_not_retry_on_these_codes
    except httpx.ConnectError:
        return False
    except:
        return True


@task(retries=1, retry_condition_fn=retry_handler)
def api_call_task(url):
    response = httpx.get(url)
    response.raise_for_status()
    return response.json()


@flow
def my_workflow(url):
    api_call_task(url=url)


for code in (404, 503):
    state = my_workflow(url=f"https://httpbin.org/status/{code}", return_state=True)
    print(code, state.type.value)
