"""Print, as one JSON object, what a fault cell's run store says (the store of $TETHER_HOME).

    python store_evidence.py

``runs``: every flow run; ``detail``: the one run's tasks, state changes and ledger rows
(null unless there is exactly one run); ``orphans``: the ledger's orphans. Each is the
``as_dict()`` of the store's public records, the shape ``tether ... --json`` prints. It runs
in a process of its own so that it reads with the tether on disk now, as the CLI would.
"""

import json

from tether.store import open_store

store = open_store()
try:
    runs = store.flow_runs(limit=None)
    detail = store.flow_run(runs[0].id).as_dict() if len(runs) == 1 else None
    orphans = [entry.as_dict() for entry in store.orphans()]
finally:
    store.close()
print(json.dumps({"runs": [run.as_dict() for run in runs], "detail": detail, "orphans": orphans}, default=str))
