"""The engine: the flow process's side of running flows and tasks.

`FlowRun` and `TaskRun` apply the kernel's rules (`tether._core._decide`) and do the I/O:
threads, signals, slots, hooks, timeouts and the store. `_shells` runs a task run's attempts
in a thread or on an event loop, `_flow_shells` runs a flow body, `_remote` drives an attempt
that runs in a worker process and `_copies` is the flow process's book of the copies of
resources that workers opened. The engine reads flows' and tasks' options from their records
(`tether._options`) and never imports the decorators above it. What runs inside a worker lives
in `tether.runners`, on the other side of the process boundary. This package re-exports
nothing: import the module you need.
"""
