"""Print, as one JSON object, what a fault cell's run store says (the store of $TETHER_HOME).

    python store_evidence.py

``runs``: every flow run; ``detail``: the one run's tasks, state changes and ledger rows
(null unless there is exactly one run); ``orphans``: the ledger's orphans. Each is the
``as_dict()`` of the store's public records, the shape ``tether ... --json`` prints.
"""

from __future__ import annotations

import json
from typing import Any

from tether.store import Store, open_store


def store_evidence(store: Store) -> dict[str, Any]:
    """The runs, the one run's detail and the orphans of ``store``, which is closed afterwards."""
    try:
        runs = store.flow_runs(limit=None)
        detail = store.flow_run(runs[0].id).as_dict() if len(runs) == 1 else None
        orphans = [entry.as_dict() for entry in store.orphans()]
    finally:
        store.close()
    return json.loads(json.dumps({"runs": [run.as_dict() for run in runs], "detail": detail, "orphans": orphans}, default=str))


if __name__ == "__main__":
    print(json.dumps(store_evidence(open_store())))
