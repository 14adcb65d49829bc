"""The engine: the flow process's side of running flows and tasks.

`FlowRun` and `TaskRun` apply the kernel's rules (`tether._core`) and do the I/O: threads,
signals, slots, hooks, timeouts and the store. `_remote` drives an attempt that runs in a
worker process and `_copies` is the flow process's book of the copies of resources that
workers opened. What runs inside a worker lives in `tether.runners`, on the other side of the
process boundary. This package re-exports nothing: import the module you need.
"""
