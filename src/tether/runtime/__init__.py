"""The current run's attributes, as in ``prefect.runtime``.

``from tether.runtime import flow_run, task_run, deployment``, then ``flow_run.name``,
``flow_run.parameters``, ``task_run.id``... Each attribute is read when asked, from the
run the calling code is in; outside a run it is None or empty, as in Prefect (except
``flow_run.scheduled_start_time``, which is then the current time, as in Prefect).
``deployment`` names the deployment of a run ``tether serve`` started; in any other run
its attributes are None or empty.
"""

from tether.runtime import deployment as deployment
from tether.runtime import flow_run as flow_run
from tether.runtime import task_run as task_run

__all__: list[str] = []
